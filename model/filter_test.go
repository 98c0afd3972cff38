package model

import "testing"

func TestCgroupWantContains(t *testing.T) {
	w := CgroupWant{ID: 100, Level: 2, Path: "/system.slice/foo.service"}
	for _, c := range []struct {
		id   uint64
		path string
		want bool
	}{
		{100, "", true},                              // the cgroup itself, by id
		{100, "/elsewhere", true},                    // the id decides
		{101, "/system.slice/foo.service/sub", true}, // below it
		{102, "/system.slice/foo.service", true},     // the same path (recreated)
		{103, "/system.slice/foo.services", false},   // a sibling with a longer name
		{104, "/system.slice", false},                // its parent
		{105, "", false},                             // not resolved
		{0, "", false},
	} {
		if got := w.Contains(c.id, c.path); got != c.want {
			t.Errorf("%+v.Contains(%d, %q) = %v, want %v", w, c.id, c.path, got, c.want)
		}
	}
	root := CgroupWant{ID: 1, Path: "/"}
	if !root.Contains(7, "/a/b") || root.Contains(7, "") {
		t.Error("the root contains every resolved cgroup, and an unresolved one only by id")
	}
	if (CgroupWant{ID: 9, Path: "/a/"}).Contains(8, "/a/b") != true {
		t.Error("a trailing slash in the wanted path")
	}
}

func TestMatchSocketNetnsAndCgroup(t *testing.T) {
	sock := SocketFacts{Family: AFInet, Sport: 80, Netns: 4026531840, CgroupID: 55, CgroupPath: "/machine.slice/libpod-" + idA + ".scope/container"}
	pod := CgroupWant{ID: 50, Level: 2, Path: "/machine.slice/libpod-" + idA + ".scope"}
	other := CgroupWant{ID: 60, Level: 1, Path: "/system.slice"}
	for _, c := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"no filter", Filter{}, true},
		{"its netns", Filter{Netns: []uint32{1, 4026531840}}, true},
		{"another netns", Filter{Netns: []uint32{4026532000}}, false},
		{"its container's cgroup, by path", Filter{Cgroups: []CgroupWant{other, pod}}, true},
		{"another cgroup", Filter{Cgroups: []CgroupWant{other}}, false},
		{"netns and cgroup AND", Filter{Netns: []uint32{4026532000}, Cgroups: []CgroupWant{pod}}, false},
		{"with a port", Filter{Ports: []uint16{80}, Cgroups: []CgroupWant{pod}, Netns: []uint32{4026531840}}, true},
	} {
		if got := c.f.MatchSocket(sock); got != c.want {
			t.Errorf("%s: MatchSocket = %v, want %v", c.name, got, c.want)
		}
	}
	unknown := SocketFacts{Family: AFInet}
	if (&Filter{Netns: []uint32{4026531840}}).MatchSocket(unknown) || (&Filter{Cgroups: []CgroupWant{pod}}).MatchSocket(unknown) {
		t.Error("a socket whose namespace and cgroup are not known matches no namespace or cgroup filter")
	}
	for _, c := range []struct {
		f    Filter
		want bool
	}{
		{Filter{Containers: []string{idA[:12]}}, true},                                      // its container, by a prefix
		{Filter{Containers: []string{idB}}, false},                                          // another
		{Filter{Containers: []string{idA}, Cgroups: []CgroupWant{pod}}, true},               // AND
		{Filter{Containers: []string{idA}, Cgroups: []CgroupWant{other}}, false},            // AND, outside the subtree
		{Filter{Containers: []string{"nginx.service", idA[:4]}, Netns: []uint32{1}}, false}, // AND with netns
	} {
		if got := c.f.MatchSocket(sock); got != c.want {
			t.Errorf("%+v: MatchSocket = %v, want %v", c.f, got, c.want)
		}
	}
	// A cgroup below a container's own (a container's cgroup namespace,
	// docker in docker) is the container's.
	inner := SocketFacts{Family: AFInet, CgroupPath: "/docker/" + idA + "/docker/" + idB}
	if !(&Filter{Containers: []string{idA}}).MatchSocket(inner) || !(&Filter{Containers: []string{idB}}).MatchSocket(inner) {
		t.Error("a socket of a container in a container is in both")
	}
	podSock := SocketFacts{Family: AFInet, CgroupPath: "/kubepods/burstable/pod" + uid + "/" + idA}
	if !(&Filter{Containers: []string{uid}}).MatchSocket(podSock) {
		t.Error("a pod uid selects its containers' sockets")
	}
	if (&Filter{Containers: []string{idA}}).MatchSocket(SocketFacts{Family: AFInet, CgroupID: 5}) {
		t.Error("a socket whose cgroup is not resolved matches no --container")
	}
	if !(&Filter{Netns: []uint32{1}}).Sticky() || !(&Filter{Cgroups: []CgroupWant{pod}}).Sticky() || !(&Filter{Containers: []string{"x"}}).Sticky() {
		t.Error("namespace and cgroup filters select sockets: sticky")
	}
	// SocketInfo.Facts carries them.
	si := SocketInfo{Family: AFInet, Netns: 4026531840, CgroupID: 55, Cgroup: &CgroupInfo{Path: sock.CgroupPath}}
	if got := (&Filter{Cgroups: []CgroupWant{pod}, Netns: []uint32{4026531840}}).FilterSockets([]SocketInfo{si, {Family: AFInet}}); len(got) != 1 {
		t.Errorf("FilterSockets kept %d sockets, want 1", len(got))
	}
}

func TestFilterValidateCgroups(t *testing.T) {
	var many []CgroupWant
	for i := range MaxCgroupWants + 1 {
		many = append(many, CgroupWant{ID: uint64(i + 1)})
	}
	for _, c := range []struct {
		name string
		f    Filter
		ok   bool
	}{
		{"fine", Filter{Cgroups: many[:MaxCgroupWants], Netns: []uint32{4026531840}}, true},
		{"too many cgroups", Filter{Cgroups: many}, false},
		{"id 0", Filter{Cgroups: []CgroupWant{{Path: "/x"}}}, false},
		{"too deep", Filter{Cgroups: []CgroupWant{{ID: 3, Level: MaxCgroupLevel + 1}}}, false},
		{"netns 0", Filter{Netns: []uint32{0}}, false},
	} {
		if err := c.f.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
