// Package spec holds the protocol definitions of the guest agent's two
// Connect services, process and filesystem, and the Go code generated from
// them (subpackages process, process/processconnect, filesystem and
// filesystem/filesystemconnect).
//
// The definitions are kindling's own, written to be wire-compatible with E2B's
// envd: the protobuf packages, services, methods, messages, field names and
// numbers are envd's, so an E2B SDK and kindling's agent client both speak to
// the agent unchanged.
//
// The generated code is committed so that building needs no protoc. To
// regenerate after editing a .proto file, with protoc on PATH:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
//	go generate ./agent/internal/spec
//
// It is imported by the agent client (package agent) and the agent's server
// (package agent/server) only.
package spec

//go:generate protoc -I . --go_out=. --go_opt=module=github.com/kindling-vm/kindling/agent/internal/spec --connect-go_out=. --connect-go_opt=module=github.com/kindling-vm/kindling/agent/internal/spec process.proto filesystem.proto
