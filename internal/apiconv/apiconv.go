// Package apiconv converts between the runtime's types (package sandbox,
// package template) and the native API's protobuf messages, and between
// kindling's error kinds (internal/errdefs) and Connect codes: one table,
// used by both ends of the wire, so that what the server sends is what the
// client reads back.
//
// It is imported by the server (package server) and its Go client (package
// sandbox/remote) only.
package apiconv

import (
	"context"
	"errors"
	"net"
	"time"

	"connectrpc.com/connect"

	"github.com/kindling-vm/kindling/agent"
	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
	"github.com/kindling-vm/kindling/vmm"
)

// kinds pairs each error kind with its Connect code, one for one.
var kinds = []struct {
	kind error
	code connect.Code
}{
	{errdefs.ErrNotFound, connect.CodeNotFound},
	{errdefs.ErrExists, connect.CodeAlreadyExists},
	{errdefs.ErrInvalid, connect.CodeInvalidArgument},
	{errdefs.ErrConflict, connect.CodeFailedPrecondition},
	{errdefs.ErrNotSupported, connect.CodeUnimplemented},
	{errdefs.ErrUnavailable, connect.CodeUnavailable},
	{errdefs.ErrCorrupt, connect.CodeDataLoss},
	// The guest agent refused: a wrong token, an unknown user, a file the
	// user may not touch.
	{agent.ErrAccessDenied, connect.CodePermissionDenied},
}

// Code returns the Connect code of err's kind: CodeInternal when it has
// none, CodeCanceled or CodeDeadlineExceeded for a context's errors.
func Code(err error) connect.Code {
	for _, k := range kinds {
		if errors.Is(err, k.kind) {
			return k.code
		}
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeInternal
}

// Kind returns the error kind of a Connect code, nil for a code no kind
// maps to.
func Kind(code connect.Code) error {
	for _, k := range kinds {
		if k.code == code {
			return k.kind
		}
	}
	return nil
}

// ToConnect turns a runtime error into the Connect error a handler returns:
// the code of its kind and its message.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(Code(err), errors.New(err.Error()))
}

// RemoteError is an error a server returned: its message as the server
// wrote it, matching the kind its code maps to (and context.Canceled or
// context.DeadlineExceeded for those codes).
type RemoteError struct {
	Code    connect.Code
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Is reports whether target is the error kind of e's code.
func (e *RemoteError) Is(target error) bool {
	if k := Kind(e.Code); k != nil && target == k {
		return true
	}
	switch e.Code {
	case connect.CodeCanceled:
		return target == context.Canceled
	case connect.CodeDeadlineExceeded:
		return target == context.DeadlineExceeded
	}
	return false
}

// FromConnect turns an error from a Connect client call back into a
// kindling error: a server's answer becomes a *RemoteError matching its
// kind; a failure to reach the server matches errdefs.ErrUnavailable.
func FromConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	var ne net.Error
	if ce.Code() == connect.CodeUnavailable && errors.As(ce.Unwrap(), &ne) {
		// The server could not be reached at all: say it was the server.
		return &RemoteError{Code: connect.CodeUnavailable, Message: "kindlingd: " + ce.Message()}
	}
	return &RemoteError{Code: ce.Code(), Message: ce.Message()}
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Time and ParseTime are the API's time encoding (RFC 3339, UTC; empty
// for the zero time).
func Time(t time.Time) string { return timeString(t) }

// ParseTime reads Time's encoding; a malformed value reads as zero.
func ParseTime(s string) time.Time { return parseTime(s) }

func diskToPB(d *sandbox.Disk) *pb.Disk {
	if d == nil {
		return nil
	}
	return &pb.Disk{Path: d.Path, ReadOnly: d.ReadOnly}
}

func diskFromPB(d *pb.Disk) *sandbox.Disk {
	if d == nil {
		return nil
	}
	return &sandbox.Disk{Path: d.GetPath(), ReadOnly: d.GetReadOnly()}
}

// NetsToPB converts network interfaces.
func NetsToPB(ns []sandbox.Net) []*pb.Net {
	if ns == nil {
		return nil
	}
	out := make([]*pb.Net, len(ns))
	for i, n := range ns {
		out[i] = &pb.Net{Auto: n.Auto, Tap: n.Tap, Mac: n.MAC, Slot: n.Slot}
	}
	return out
}

// NetsFromPB converts network interfaces.
func NetsFromPB(ns []*pb.Net) []sandbox.Net {
	if ns == nil {
		return nil
	}
	out := make([]sandbox.Net, len(ns))
	for i, n := range ns {
		out[i] = sandbox.Net{Auto: n.GetAuto(), Tap: n.GetTap(), MAC: n.GetMac(), Slot: n.GetSlot()}
	}
	return out
}

// SpecToPB converts a spec. Memory and NetFlags (a config file's spellings
// of MemoryMiB and Net) are not sent: the caller parses them first.
func SpecToPB(s sandbox.Spec) *pb.Spec {
	p := &pb.Spec{
		Id: s.ID, Kernel: s.Kernel, Demo: s.Demo, Initrd: s.Initrd, KernelArgs: s.KernelArgs,
		Rootfs: diskToPB(s.Rootfs), Cpus: int32(s.VCPUs), MemoryMib: int32(s.MemoryMiB), Smt: s.SMT,
		Net: NetsToPB(s.Net), Netns: s.NetNS, VsockCid: s.VsockCID, Firecracker: s.Firecracker,
		Jailer: s.Jailer, WaitConsole: s.WaitConsole, HotplugSlots: int32(s.Placeholders),
		HotplugWritable: s.HotplugWritable, Labels: s.Labels,
		Agent: s.Agent, CniNetworks: s.CNINetworks, Ports: s.Ports, CniConfDir: s.CNIConfDir,
		CniBinDirs: s.CNIBinDirs, CpuTemplate: s.CPUTemplate, VmmLogLevel: s.VMMLogLevel,
		DriveRate: s.DriveRate, NetRate: s.NetRate, Balloon: s.Balloon, Entropy: s.Entropy,
		Metadata: s.Metadata, NetSlot: s.NetSlot, Egress: s.Egress, AllowEgress: s.AllowEgress,
		NoJailer: s.NoJailer, CpuLimit: s.CPULimit, MemoryLimit: s.MemoryLimit,
	}
	for _, d := range s.Drives {
		p.Drives = append(p.Drives, diskToPB(&d))
	}
	return p
}

// SpecFromPB converts a spec.
func SpecFromPB(p *pb.Spec) sandbox.Spec {
	if p == nil {
		return sandbox.Spec{}
	}
	s := sandbox.Spec{
		ID: p.GetId(), Kernel: p.GetKernel(), Demo: p.GetDemo(), Initrd: p.GetInitrd(),
		KernelArgs: p.GetKernelArgs(), Rootfs: diskFromPB(p.GetRootfs()), VCPUs: int(p.GetCpus()),
		MemoryMiB: int(p.GetMemoryMib()), SMT: p.GetSmt(), Net: NetsFromPB(p.GetNet()),
		NetNS: p.GetNetns(), VsockCID: p.GetVsockCid(), Firecracker: p.GetFirecracker(),
		Jailer: p.GetJailer(), WaitConsole: p.GetWaitConsole(), Placeholders: int(p.GetHotplugSlots()),
		HotplugWritable: p.GetHotplugWritable(), Labels: p.GetLabels(),
		Agent: p.GetAgent(), CNINetworks: p.GetCniNetworks(), Ports: p.GetPorts(), CNIConfDir: p.GetCniConfDir(),
		CNIBinDirs: p.GetCniBinDirs(), CPUTemplate: p.GetCpuTemplate(), VMMLogLevel: p.GetVmmLogLevel(),
		DriveRate: p.GetDriveRate(), NetRate: p.GetNetRate(), Balloon: p.GetBalloon(), Entropy: p.GetEntropy(),
		Metadata: p.GetMetadata(), NetSlot: p.GetNetSlot(), Egress: p.GetEgress(), AllowEgress: p.GetAllowEgress(),
		NoJailer: p.GetNoJailer(), CPULimit: p.GetCpuLimit(), MemoryLimit: p.GetMemoryLimit(),
	}
	for _, d := range p.GetDrives() {
		s.Drives = append(s.Drives, *diskFromPB(d))
	}
	return s
}

// ExitToPB converts an exit.
func ExitToPB(e *sandbox.Exit) *pb.Exit {
	if e == nil {
		return nil
	}
	return &pb.Exit{Code: int32(e.Code), Signal: e.Signal, At: timeString(e.At), Error: e.Error}
}

// ExitFromPB converts an exit.
func ExitFromPB(e *pb.Exit) *sandbox.Exit {
	if e == nil {
		return nil
	}
	return &sandbox.Exit{Code: int(e.GetCode()), Signal: e.GetSignal(), At: parseTime(e.GetAt()), Error: e.GetError()}
}

// TapsToPB converts taps.
func TapsToPB(ts []sandbox.TapInfo) []*pb.Tap {
	var out []*pb.Tap
	for _, t := range ts {
		out = append(out, &pb.Tap{Name: t.Name, Netns: t.NetNS, Mac: t.MAC, Created: t.Created})
	}
	return out
}

// TapsFromPB converts taps.
func TapsFromPB(ts []*pb.Tap) []sandbox.TapInfo {
	var out []sandbox.TapInfo
	for _, t := range ts {
		out = append(out, sandbox.TapInfo{Name: t.GetName(), NetNS: t.GetNetns(), MAC: t.GetMac(), Created: t.GetCreated()})
	}
	return out
}

// InfoToPB converts a sandbox's description; endAt is its lease's end
// (zero for none).
func InfoToPB(in sandbox.Info, endAt time.Time) *pb.Sandbox {
	p := &pb.Sandbox{
		Id: in.ID, Status: string(in.Status), Spec: SpecToPB(in.Spec), Kernel: in.Kernel,
		CreatedAt: timeString(in.CreatedAt), StartedAt: timeString(in.StartedAt),
		Pid: int32(in.PID), MonitorPid: int32(in.MonitorPID), Exit: ExitToPB(in.Exit),
		Dir: in.Dir, ApiSocket: in.APISocket, ConsoleLog: in.ConsoleLog,
		FirecrackerLog: in.FirecrackerLog, VsockSocket: in.VsockSocket, Taps: TapsToPB(in.Taps),
		FirecrackerVersion: in.FirecrackerVersion, RestoredFrom: in.RestoredFrom, EndAt: timeString(endAt),
		Network: NetworkToPB(in.Network), RecordId: in.RecordID,
		JailUid: int32(in.JailUID), Chroot: in.Chroot,
	}
	for _, s := range in.Slots {
		ps := &pb.Slot{Id: s.ID, Placeholder: s.Placeholder, ReadOnly: s.ReadOnly, AttachedPath: s.AttachedPath}
		if s.Drive != nil {
			ps.DrivePath, ps.DriveReadOnly = s.Drive.Path, s.Drive.ReadOnly
		}
		p.Slots = append(p.Slots, ps)
	}
	return p
}

// InfoFromPB converts a sandbox's description.
func InfoFromPB(p *pb.Sandbox) sandbox.Info {
	if p == nil {
		return sandbox.Info{}
	}
	in := sandbox.Info{
		ID: p.GetId(), Status: sandbox.Status(p.GetStatus()), Spec: SpecFromPB(p.GetSpec()),
		Kernel: p.GetKernel(), CreatedAt: parseTime(p.GetCreatedAt()), StartedAt: parseTime(p.GetStartedAt()),
		PID: int(p.GetPid()), MonitorPID: int(p.GetMonitorPid()), Exit: ExitFromPB(p.GetExit()),
		Dir: p.GetDir(), APISocket: p.GetApiSocket(), ConsoleLog: p.GetConsoleLog(),
		FirecrackerLog: p.GetFirecrackerLog(), VsockSocket: p.GetVsockSocket(), Taps: TapsFromPB(p.GetTaps()),
		FirecrackerVersion: p.GetFirecrackerVersion(), RestoredFrom: p.GetRestoredFrom(),
		Network: NetworkFromPB(p.GetNetwork()), RecordID: p.GetRecordId(),
		JailUID: int(p.GetJailUid()), Chroot: p.GetChroot(),
	}
	for _, s := range p.GetSlots() {
		slot := vmm.Slot{ID: s.GetId(), Placeholder: s.GetPlaceholder(), ReadOnly: s.GetReadOnly(), AttachedPath: s.GetAttachedPath()}
		if s.GetDrivePath() != "" {
			slot.Drive = &vmm.Drive{Path: s.GetDrivePath(), ReadOnly: s.GetDriveReadOnly()}
		}
		in.Slots = append(in.Slots, slot)
	}
	return in
}

// SnapshotToPB converts a snapshot's description.
func SnapshotToPB(s sandbox.SnapshotInfo) *pb.SnapshotResponse {
	p := &pb.SnapshotResponse{Dir: s.Dir, From: s.From, CreatedAt: timeString(s.CreatedAt),
		Firecracker: s.Firecracker, Spec: SpecToPB(s.Spec), Kernel: s.Kernel, Taps: TapsToPB(s.Taps)}
	for _, d := range s.Drives {
		p.Drives = append(p.Drives, &pb.SnapshotDrive{Id: d.ID, Path: d.Path, ReadOnly: d.ReadOnly, Root: d.Root, Owned: d.Owned})
	}
	return p
}

// SnapshotFromPB converts a snapshot's description.
func SnapshotFromPB(p *pb.SnapshotResponse) sandbox.SnapshotInfo {
	s := sandbox.SnapshotInfo{Dir: p.GetDir(), From: p.GetFrom(), CreatedAt: parseTime(p.GetCreatedAt()),
		Firecracker: p.GetFirecracker(), Spec: SpecFromPB(p.GetSpec()), Kernel: p.GetKernel(), Taps: TapsFromPB(p.GetTaps())}
	for _, d := range p.GetDrives() {
		s.Drives = append(s.Drives, sandbox.SnapshotDrive{ID: d.GetId(), Path: d.GetPath(), ReadOnly: d.GetReadOnly(), Root: d.GetRoot(), Owned: d.GetOwned()})
	}
	return s
}

// TemplateToPB converts a template's description.
func TemplateToPB(t template.Template) *pb.Template {
	return &pb.Template{Name: t.Name, Dir: t.Dir, CreatedAt: timeString(t.CreatedAt), From: t.From,
		Firecracker: t.Firecracker, Cpus: int32(t.VCPUs), MemoryMib: int32(t.MemoryMiB),
		VsockCid: t.VsockCID, Clones: t.Clones}
}

// TemplateFromPB converts a template's description: the fields the API
// carries (not the file list or drives, which stay on the server).
func TemplateFromPB(p *pb.Template) template.Template {
	return template.Template{Name: p.GetName(), Dir: p.GetDir(), CreatedAt: parseTime(p.GetCreatedAt()), From: p.GetFrom(),
		Firecracker: p.GetFirecracker(), VCPUs: int(p.GetCpus()), MemoryMiB: int(p.GetMemoryMib()),
		VsockCID: p.GetVsockCid(), Clones: p.GetClones()}
}
