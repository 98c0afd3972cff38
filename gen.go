// Package tcpstate is the root of the tcpstate module. It holds only the
// go:generate line that compiles bpf/tcpstate.bpf.c into the tracer package;
// the program itself is cmd/tcpstate.
package tcpstate

// The generated files (tracer/tcpstate_bpfel.go and tracer/tcpstate_bpfel.o)
// are committed, so building and testing need no clang. `make generate`
// reruns this with Debian's clang and llvm (llvm-strip) and libbpf-dev headers.
//go:generate go tool bpf2go -tags linux -target bpfel -type event -type event_flag -type counter -type close_fact -type close_err -type close_timer -type hist_kind -type hist_size -type port_kind -type sock_record -type snap_record -type holder_record -type snap_kind -type snap_flag -type sock_flag -output-dir tracer -go-package tracer tcpstate bpf/tcpstate.bpf.c -- -I./bpf -mcpu=v3 -Wall -Werror
