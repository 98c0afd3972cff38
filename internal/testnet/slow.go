package testnet

import (
	"os"
	"strconv"
	"time"
)

// Slowdown is how many times slower than the project's machines this one
// runs the tests: TCPSTATE_TEST_SLOWDOWN, 1 when unset. The kernel
// matrix's guests set it (their CPUs are emulated: loading the tracer takes
// seconds, a loopback connection milliseconds). Timeouts that only bound a
// wait are multiplied by it (Scaled); loads that only need volume may shrink
// by it. Nothing a test asserts about the kernel changes with it.
func Slowdown() int {
	n, err := strconv.Atoi(os.Getenv("TCPSTATE_TEST_SLOWDOWN"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// Scaled is d times Slowdown.
func Scaled(d time.Duration) time.Duration { return d * time.Duration(Slowdown()) }
