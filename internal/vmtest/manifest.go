package vmtest

// ManifestPath is where the guest's /init finds what to run.
const ManifestPath = "/vmtest.json"

// The guest's layout.
const (
	GuestBinDir   = "/bin"     // tcpstate, loadgen: what tests would otherwise build with Go
	GuestTestDir  = "/tests"   // the test binaries
	GuestSrcDir   = "/src"     // each package's working directory
	GuestModDir   = "/modules" // kernel modules, decompressed
	ProtocolPort  = "/dev/ttyS1"
	BinDirEnv     = "TCPSTATE_TEST_BINDIR" // testnet.Prebuilt reads it
	GuestEnv      = "TCPSTATE_VM_GUEST"    // set to the kernel label in the guest
	DefaultMemory = "3G"
)

// Manifest is what the guest runs, written by the host into the initramfs.
type Manifest struct {
	Label    string     `json:"label"`   // the kernel asked for: 6.1
	Modules  []Module   `json:"modules"` // Path is the guest's, in load order
	Packages []Package  `json:"packages"`
	Commands [][]string `json:"commands,omitempty"` // run first, output on the console (for looking into a kernel)
	Env      []string   `json:"env"`                // the test binaries' environment
}
