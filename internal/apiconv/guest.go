package apiconv

import (
	"io/fs"

	"github.com/kindling-vm/kindling/agent"
	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/sandbox"
)

// fileTypes pairs the guest's file types with their names on the wire.
var fileTypes = []struct {
	t    sandbox.FileType
	name string
}{
	{sandbox.TypeFile, "file"},
	{sandbox.TypeDir, "dir"},
	{sandbox.TypeSymlink, "symlink"},
}

// FileInfoToPB converts a guest file's description.
func FileInfoToPB(fi sandbox.FileInfo) *pb.FileInfo {
	typ := "unknown"
	for _, ft := range fileTypes {
		if ft.t == fi.Type {
			typ = ft.name
		}
	}
	return &pb.FileInfo{Name: fi.Name, Path: fi.Path, Type: typ, Size: fi.Size, Mode: uint32(fi.Mode.Perm()),
		Owner: fi.Owner, Group: fi.Group, ModifiedAt: timeString(fi.ModTime), Target: fi.Target}
}

// FileInfoFromPB converts a guest file's description back.
func FileInfoFromPB(p *pb.FileInfo) sandbox.FileInfo {
	fi := sandbox.FileInfo{Name: p.GetName(), Path: p.GetPath(), Size: p.GetSize(), Mode: fs.FileMode(p.GetMode()).Perm(),
		Owner: p.GetOwner(), Group: p.GetGroup(), ModTime: parseTime(p.GetModifiedAt()), Target: p.GetTarget()}
	for _, ft := range fileTypes {
		if ft.name == p.GetType() {
			fi.Type = ft.t
		}
	}
	return fi
}

// eventTypes are the watch event types by their names on the wire
// (agent.EventType's String).
var eventTypes = []agent.EventType{agent.EventCreate, agent.EventWrite, agent.EventRemove, agent.EventRename, agent.EventChmod}

// EventTypeFromPB reads a watch event's type.
func EventTypeFromPB(name string) agent.EventType {
	for _, t := range eventTypes {
		if t.String() == name {
			return t
		}
	}
	return agent.EventUnknown
}
