// Package kindlingv1 is kindling's native API: the protocol definition
// (kindling.proto, the machine-readable spec of what kindlingd serves) and
// the Go code generated from it, with the Connect handlers and clients in
// kindlingv1connect.
//
// The generated code is committed so that building needs no protoc. To
// regenerate after editing kindling.proto, with protoc on PATH:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
//	go generate ./api/kindling/v1
//
// It is imported by the server (package server) and its Go client
// (package sandbox/remote); programs in other languages generate their own
// client from kindling.proto.
package kindlingv1

//go:generate protoc -I . --go_out=. --go_opt=module=github.com/kindling-vm/kindling/api/kindling/v1 --connect-go_out=. --connect-go_opt=module=github.com/kindling-vm/kindling/api/kindling/v1 kindling.proto
