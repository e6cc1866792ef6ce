package apiconv

import (
	pb "github.com/kindling-vm/kindling/api/kindling/v1"
	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/template"
)

// ImageToPB converts an image and its users.
func ImageToPB(im image.Image, users []template.ImageUser) *pb.Image {
	out := &pb.Image{
		Id: im.ID, Digest: im.Digest, Refs: im.Refs, Platform: im.Platform,
		Created: timeString(im.Created), Imported: timeString(im.Imported), Source: im.Source,
		Layers: int32(im.Layers), Size: im.Size,
		Config: &pb.ImageConfig{Env: im.Config.Env, WorkingDir: im.Config.WorkingDir, User: im.Config.User,
			Entrypoint: im.Config.Entrypoint, Cmd: im.Config.Cmd},
	}
	for _, r := range im.RootFS {
		out.Rootfs = append(out.Rootfs, &pb.ImageRootFS{AgentSha256: r.Agent, File: r.File, Path: r.Path, Size: r.Size})
	}
	for _, u := range users {
		out.Users = append(out.Users, &pb.ImageUser{Kind: u.Kind, Name: u.Name})
	}
	return out
}

// ImageFromPB is the reverse of ImageToPB.
func ImageFromPB(p *pb.Image) (image.Image, []template.ImageUser) {
	c := p.GetConfig()
	im := image.Image{
		ID: p.GetId(), Digest: p.GetDigest(), Refs: p.GetRefs(), Platform: p.GetPlatform(),
		Created: parseTime(p.GetCreated()), Imported: parseTime(p.GetImported()), Source: p.GetSource(),
		Layers: int(p.GetLayers()), Size: p.GetSize(),
		Config: image.Config{Env: c.GetEnv(), WorkingDir: c.GetWorkingDir(), User: c.GetUser(),
			Entrypoint: c.GetEntrypoint(), Cmd: c.GetCmd()},
	}
	for _, r := range p.GetRootfs() {
		im.RootFS = append(im.RootFS, image.RootFS{Agent: r.GetAgentSha256(), File: r.GetFile(), Path: r.GetPath(), Size: r.GetSize()})
	}
	users := make([]template.ImageUser, 0, len(p.GetUsers()))
	for _, u := range p.GetUsers() {
		users = append(users, template.ImageUser{Kind: u.GetKind(), Name: u.GetName()})
	}
	return im, users
}

// ImageEventToPB converts a progress event of a pull or an import.
func ImageEventToPB(e image.Event) *pb.ImageEvent {
	return &pb.ImageEvent{Event: string(e.Kind), Id: e.ID, Layer: int32(e.Layer), Layers: int32(e.Layers), Digest: e.Digest,
		Bytes: e.Bytes, Size: e.Size, LayerDone: e.LayerDone, Total: e.Total, Rate: e.Rate}
}

// ImageEventFromPB is the reverse of ImageEventToPB.
func ImageEventFromPB(p *pb.ImageEvent) image.Event {
	return image.Event{Kind: image.EventKind(p.GetEvent()), ID: p.GetId(), Layer: int(p.GetLayer()), Layers: int(p.GetLayers()),
		Digest: p.GetDigest(), Bytes: p.GetBytes(), Size: p.GetSize(), LayerDone: p.GetLayerDone(), Total: p.GetTotal(), Rate: p.GetRate()}
}
