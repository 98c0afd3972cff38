package model

import "testing"

// The cgroup layouts below are the ones each runtime creates on the host
// (cgroup v2, or the name=systemd/unified paths of a hybrid host): the
// directory names are theirs, the ids are made up for the test.
const (
	idA = "4c0b7b8a9e1f2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbc"
	idB = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	uid = "3a9f5c2e-7d41-4b8e-9c06-51f2e8a7d3b4"
	// The pod uid as systemd slice names spell it: dashes separate
	// levels of slices there, so kubelet writes underscores.
	uidSlice = "3a9f5c2e_7d41_4b8e_9c06_51f2e8a7d3b4"
)

func TestParseCgroupPath(t *testing.T) {
	cases := []struct {
		name string
		path string
		want Container
	}{
		// docker
		{"docker cgroupfs driver", "/docker/" + idA, Container{ID: idA, Runtime: RuntimeDocker}},
		{"docker systemd driver", "/system.slice/docker-" + idA + ".scope", Container{ID: idA, Runtime: RuntimeDocker}},
		{"docker systemd driver, custom slice", "/docker.slice/docker-" + idA + ".scope", Container{ID: idA, Runtime: RuntimeDocker}},
		{"rootless docker", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + idA + ".scope", Container{ID: idA, Runtime: RuntimeDocker}},
		{"docker in docker: the inner container", "/docker/" + idA + "/docker/" + idB, Container{ID: idB, Runtime: RuntimeDocker}},
		{"a systemd inside a docker container is the container's", "/system.slice/docker-" + idA + ".scope/system.slice/nginx.service", Container{ID: idA, Runtime: RuntimeDocker}},
		{"dockerd itself is a service", "/system.slice/docker.service", Container{ID: "docker.service", Runtime: RuntimeSystemd}},

		// containerd
		{"nerdctl systemd driver", "/system.slice/nerdctl-" + idA + ".scope", Container{ID: idA, Runtime: RuntimeContainerd}},
		{"rootless nerdctl", "/user.slice/user-1000.slice/user@1000.service/user.slice/nerdctl-" + idA + ".scope", Container{ID: idA, Runtime: RuntimeContainerd}},
		{"containerd cgroupfs, namespace default: runtime not named", "/default/" + idA, Container{ID: idA}},

		// Kubernetes
		{"kubernetes containerd cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + idA, Container{ID: idA, Runtime: RuntimeCRI, PodUID: uid}},
		{"kubernetes containerd cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + idA, Container{ID: idA, Runtime: RuntimeCRI, PodUID: uid}},
		{"kubernetes containerd cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + idA, Container{ID: idA, Runtime: RuntimeCRI, PodUID: uid}},
		{"kubernetes containerd systemd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSlice + ".slice/cri-containerd-" + idA + ".scope",
			Container{ID: idA, Runtime: RuntimeContainerd, PodUID: uid}},
		{"kubernetes containerd systemd guaranteed", "/kubepods.slice/kubepods-pod" + uidSlice + ".slice/cri-containerd-" + idA + ".scope",
			Container{ID: idA, Runtime: RuntimeContainerd, PodUID: uid}},
		{"kubernetes cri-o systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSlice + ".slice/crio-" + idA + ".scope",
			Container{ID: idA, Runtime: RuntimeCRIO, PodUID: uid}},
		{"kubernetes cri-o systemd, crun's container subgroup", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSlice + ".slice/crio-" + idA + ".scope/container",
			Container{ID: idA, Runtime: RuntimeCRIO, PodUID: uid}},
		{"kubernetes cri-o cgroupfs", "/kubepods/besteffort/pod" + uid + "/crio-" + idA, Container{ID: idA, Runtime: RuntimeCRIO, PodUID: uid}},
		{"kubernetes cri-o conmon is the pod's, not a container", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSlice + ".slice/crio-conmon-" + idA + ".scope",
			Container{PodUID: uid}},
		{"kubernetes dockershim systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSlice + ".slice/docker-" + idA + ".scope",
			Container{ID: idA, Runtime: RuntimeDocker, PodUID: uid}},
		{"kubernetes pod cgroup itself", "/kubepods/burstable/pod" + uid, Container{PodUID: uid}},
		{"kubernetes static pod (a hash for a uid)", "/kubepods/burstable/pod6e1f0b1c2d3e4f5a6b7c8d9e0f1a2b3c/" + idA,
			Container{ID: idA, Runtime: RuntimeCRI, PodUID: "6e1f0b1c2d3e4f5a6b7c8d9e0f1a2b3c"}},
		{"kubernetes in kind (kubelet cgroup root)", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidSlice + ".slice/cri-containerd-" + idA + ".scope",
			Container{ID: idA, Runtime: RuntimeContainerd, PodUID: uid}},
		{"kubernetes QoS slice: no pod", "/kubepods.slice/kubepods-burstable.slice", Container{}},
		{"a kubelet's own service", "/system.slice/kubelet.service", Container{ID: "kubelet.service", Runtime: RuntimeSystemd}},

		// podman
		{"podman rootful systemd", "/machine.slice/libpod-" + idA + ".scope", Container{ID: idA, Runtime: RuntimePodman}},
		{"podman rootful, crun's container subgroup", "/machine.slice/libpod-" + idA + ".scope/container", Container{ID: idA, Runtime: RuntimePodman}},
		{"podman in a pod", "/machine.slice/machine-libpod_pod_" + idB + ".slice/libpod-" + idA + ".scope", Container{ID: idA, Runtime: RuntimePodman}},
		{"podman rootful cgroupfs", "/libpod_parent/libpod-" + idA, Container{ID: idA, Runtime: RuntimePodman}},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + idA + ".scope", Container{ID: idA, Runtime: RuntimePodman}},
		{"podman rootless, container subgroup", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + idA + ".scope/container", Container{ID: idA, Runtime: RuntimePodman}},
		{"podman conmon monitor is not the container", "/machine.slice/libpod-conmon-" + idA + ".scope", Container{}},
		{"podman rootless conmon, in the user's manager", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-" + idA + ".scope",
			Container{ID: "user@1000.service", Runtime: RuntimeSystemd}},

		// LXC
		{"lxc 4 on cgroup v2", "/lxc.payload.web01", Container{ID: "web01", Runtime: RuntimeLXC}},
		{"lxc monitor", "/lxc.monitor.web01", Container{}},
		{"lxc legacy layout", "/lxc/web01", Container{ID: "web01", Runtime: RuntimeLXC}},

		// systemd
		{"a system service", "/system.slice/nginx.service", Container{ID: "nginx.service", Runtime: RuntimeSystemd}},
		{"a templated service in its slice", "/system.slice/system-getty.slice/getty@tty1.service", Container{ID: "getty@tty1.service", Runtime: RuntimeSystemd}},
		{"an escaped unit name", `/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-vda1.service`, Container{ID: "systemd-fsck@dev-vda1.service", Runtime: RuntimeSystemd}},
		{"a user service", "/user.slice/user-1000.slice/user@1000.service/app.slice/pipewire.service", Container{ID: "pipewire.service", Runtime: RuntimeSystemd}},
		{"a user's app scope belongs to the user's manager", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-4242.scope",
			Container{ID: "user@1000.service", Runtime: RuntimeSystemd}},
		{"a login session", "/user.slice/user-1000.slice/session-3.scope", Container{}},
		{"init", "/init.scope", Container{}},
		{"the root", "/", Container{}},
		{"empty", "", Container{}},

		// Not containers.
		{"hex but not 64 digits", "/docker/" + idA[:63], Container{}},
		{"upper-case hex is not an OCI id", "/docker/" + "4C0B7B8A9E1F2D3C4B5A69788796A5B4C3D2E1F00112233445566778899AABBC", Container{}},
		{"a pod-like name outside kubepods", "/pod" + uid + "/x", Container{}},
		{"a slice named .service only", "/.service", Container{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ParseCgroupPath(c.path); got != c.want {
				t.Errorf("ParseCgroupPath(%q)\n  = %+v\nwant %+v", c.path, got, c.want)
			}
		})
	}
}

func TestContainerLabelAndMatch(t *testing.T) {
	docker := Container{ID: idA, Runtime: RuntimeDocker}
	for _, c := range []struct {
		c     Container
		label string
	}{
		{docker, "docker:" + idA[:12]},
		{Container{ID: idA}, "container:" + idA[:12]},
		{Container{ID: "nginx.service", Runtime: RuntimeSystemd}, "systemd:nginx.service"},
		{Container{PodUID: uid}, "pod:" + uid},
		{Container{}, ""},
	} {
		if got := c.c.Label(); got != c.label {
			t.Errorf("%+v.Label() = %q, want %q", c.c, got, c.label)
		}
	}
	var nilInfo *CgroupInfo
	if nilInfo.Label() != "-" || (&CgroupInfo{Path: "/a/b"}).Label() != "/a/b" || (&CgroupInfo{}).Label() != "-" {
		t.Error("CgroupInfo.Label: want the path without a container, - without either")
	}
	for _, m := range []struct {
		c   Container
		arg string
		ok  bool
	}{
		{docker, idA, true},
		{docker, idA[:12], true},
		{docker, idA[:4], true},
		{docker, idA[:3], false}, // too short to mean one container
		{docker, idB[:12], false},
		{docker, "", false},
		{docker, "DOCKER", false},
		{Container{ID: "nginx.service", Runtime: RuntimeSystemd}, "nginx.service", true},
		{Container{ID: "nginx.service", Runtime: RuntimeSystemd}, "nginx", false}, // names match whole
		{Container{PodUID: uid}, uid, false},
	} {
		if got := m.c.MatchesContainer(m.arg); got != m.ok {
			t.Errorf("%+v.MatchesContainer(%q) = %v, want %v", m.c, m.arg, got, m.ok)
		}
	}
}
