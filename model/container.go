package model

import "strings"

// CgroupInfo is what user space knows of one cgroup v2: its path and the
// container (or systemd service) it belongs to. A resolver makes one per
// cgroup id and never changes it afterwards, so events may share it.
type CgroupInfo struct {
	// Path is the cgroup's path from the root of the cgroup2 hierarchy,
	// "/" for the root, "/system.slice/nginx.service" and so on; "" when
	// the id could not be resolved (the cgroup was removed before it was
	// seen).
	Path      string
	Container Container
	// enc is the record's cgroup keys for it, encoded once by
	// NewCgroupInfo: every event of the cgroup copies them.
	enc string
}

// NewCgroupInfo makes the CgroupInfo of a cgroup path, with the container
// the path names, and its JSON keys encoded once: resolvers make one per
// cgroup and share it between all its events.
func NewCgroupInfo(path string) *CgroupInfo {
	ci := &CgroupInfo{Path: path, Container: ParseCgroupPath(path)}
	ci.enc = string(appendCgroup(nil, ci))
	return ci
}

// Label is what a table shows for the cgroup: the container
// ("docker:4f797c539e6c"), else the path, else "-".
func (c *CgroupInfo) Label() string {
	if c == nil {
		return "-"
	}
	if l := c.Container.Label(); l != "" {
		return l
	}
	if c.Path != "" {
		return c.Path
	}
	return "-"
}

// Container is the container (or systemd service) a cgroup path names, as
// the runtimes lay their cgroups out (ParseCgroupPath). The zero value
// means none.
type Container struct {
	// ID is the runtime's id: 64 hex digits for docker, containerd, cri-o
	// and podman; the unit name for a systemd service ("nginx.service");
	// the container's name for LXC.
	ID string
	// Runtime names who made the cgroup: docker, containerd, cri-o,
	// podman, cri (a Kubernetes container whose path does not say which
	// runtime), lxc, systemd (a service), or "" (a container id in a path
	// no known runtime makes).
	Runtime string
	// PodUID is the Kubernetes pod's uid when the path is under kubepods
	// ("" otherwise); a cgroup of the pod itself has a PodUID and no ID.
	PodUID string
}

// Runtimes that ParseCgroupPath reports.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimePodman     = "podman"
	RuntimeCRI        = "cri"
	RuntimeLXC        = "lxc"
	RuntimeSystemd    = "systemd"
)

// Short is the id as the runtimes' own tools print it: the first 12 hex
// digits of a hex id, any other id whole.
func (c Container) Short() string {
	if len(c.ID) == 64 && isHex(c.ID) {
		return c.ID[:12]
	}
	return c.ID
}

// Label is "runtime:short id" ("docker:4f797c539e6c", "systemd:nginx.service"),
// "pod:UID" for a pod's own cgroup, or "" when the path names none.
func (c Container) Label() string {
	switch {
	case c.ID != "" && c.Runtime != "":
		return c.Runtime + ":" + c.Short()
	case c.ID != "":
		return "container:" + c.Short()
	case c.PodUID != "":
		return "pod:" + c.PodUID
	}
	return ""
}

// ParseCgroupPath finds the container and the Kubernetes pod a cgroup path
// names, from the layouts the runtimes create (no runtime or Kubernetes API
// is asked):
//
//	docker, cgroupfs driver       /docker/ID
//	docker, systemd driver        /system.slice/docker-ID.scope
//	containerd (nerdctl)          /system.slice/nerdctl-ID.scope, or .../user.slice/nerdctl-ID.scope rootless
//	podman                        /machine.slice/libpod-ID.scope[/container], /libpod_parent/libpod-ID,
//	                              /user.slice/user-UID.slice/user@UID.service/user.slice/libpod-ID.scope rootless
//	Kubernetes, cgroupfs driver   /kubepods[/besteffort|/burstable]/podUID/ID (containerd, docker) or .../crio-ID
//	Kubernetes, systemd driver    /kubepods.slice/kubepods-QOS.slice/kubepods-QOS-podUID.slice/
//	                              cri-containerd-ID.scope, crio-ID.scope or docker-ID.scope
//	                              (the uid with _ for -: systemd slice names)
//	LXC                           /lxc.payload.NAME, /lxc/NAME
//	systemd services              /system.slice/nginx.service, /user.slice/.../user@UID.service/app.slice/foo.service
//
// The deepest component that names a container wins (a container in a
// container is the inner one), and the cgroups a container makes below its
// own (podman's "container", a systemd inside it) belong to it. A path with
// no container is attributed to its deepest systemd service, if any.
// Monitors are not containers: conmon's libpod-conmon-ID.scope and
// crio-conmon-ID.scope, LXC's lxc.monitor.NAME.
func ParseCgroupPath(path string) Container {
	var c, service Container
	kube := false
	parent := ""
	for comp := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		if comp == "" {
			continue
		}
		if strings.Contains(comp, "kubepods") {
			kube = true
		}
		if kube {
			if uid, ok := podUID(comp); ok {
				c.PodUID = uid
			}
		}
		if id, rt, ok := containerComponent(comp, parent, kube && c.PodUID != ""); ok {
			c.ID, c.Runtime = id, rt
		} else if c.ID == "" && strings.HasSuffix(comp, ".service") && len(comp) > len(".service") {
			service = Container{ID: comp, Runtime: RuntimeSystemd}
		}
		parent = comp
	}
	if c.ID == "" && c.PodUID == "" {
		return service
	}
	return c
}

// containerComponent reports whether one path component names a
// container: its id and runtime. parent is the component above it; inPod
// says a Kubernetes pod's cgroup is above it.
func containerComponent(comp, parent string, inPod bool) (id, runtime string, ok bool) {
	for _, p := range []struct{ prefix, suffix, runtime string }{
		{"docker-", ".scope", RuntimeDocker},
		{"cri-containerd-", ".scope", RuntimeContainerd},
		{"nerdctl-", ".scope", RuntimeContainerd},
		{"crio-", ".scope", RuntimeCRIO},
		{"crio-", "", RuntimeCRIO},
		{"libpod-", ".scope", RuntimePodman},
		{"libpod-", "", RuntimePodman},
	} {
		rest, found := strings.CutPrefix(comp, p.prefix)
		if !found {
			continue
		}
		rest, found = strings.CutSuffix(rest, p.suffix)
		if found && isContainerID(rest) {
			return rest, p.runtime, true
		}
	}
	if name, found := strings.CutPrefix(comp, "lxc.payload."); found && name != "" {
		return name, RuntimeLXC, true
	}
	if parent == "lxc" && comp != "" && !strings.HasPrefix(comp, "lxc.") {
		return comp, RuntimeLXC, true
	}
	if isContainerID(comp) {
		switch {
		case parent == "docker":
			return comp, RuntimeDocker, true
		case inPod:
			return comp, RuntimeCRI, true
		}
		return comp, "", true
	}
	return "", "", false
}

// podUID reads a Kubernetes pod's uid from its cgroup's name: "podUID"
// (cgroupfs driver) or "kubepods[-QOS]-podUID.slice" with the uid's dashes
// turned into underscores (systemd driver: a dash separates slice levels).
func podUID(comp string) (string, bool) {
	var raw string
	if rest, ok := strings.CutPrefix(comp, "pod"); ok {
		raw = rest
	} else if i := strings.LastIndex(comp, "-pod"); i >= 0 && strings.HasSuffix(comp, ".slice") {
		raw = strings.TrimSuffix(comp[i+len("-pod"):], ".slice")
	} else {
		return "", false
	}
	uid := strings.ReplaceAll(raw, "_", "-")
	if !isUUID(uid) {
		return "", false
	}
	return uid, true
}

// isContainerID: 64 lower-case hex digits, the id every OCI runtime here
// gives its containers.
func isContainerID(s string) bool { return len(s) == 64 && isHex(s) }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

// isUUID: 8-4-4-4-12 hex digits, as Kubernetes writes pod uids. (Static
// pods have a hash instead of a uuid: 32 hex digits.)
func isUUID(s string) bool {
	if len(s) == 32 {
		return isHex(s)
	}
	parts := strings.Split(s, "-")
	if len(parts) != 5 {
		return false
	}
	for i, n := range []int{8, 4, 4, 4, 12} {
		if len(parts[i]) != n || !isHex(parts[i]) {
			return false
		}
	}
	return true
}

// MatchesContainer reports whether arg names container c: its id whole, or
// (for a hex id) a prefix of at least 4 digits, as docker takes them.
func (c Container) MatchesContainer(arg string) bool {
	if c.ID == "" || arg == "" {
		return false
	}
	if arg == c.ID {
		return true
	}
	return len(arg) >= 4 && isHex(arg) && isHex(c.ID) && strings.HasPrefix(c.ID, arg)
}
