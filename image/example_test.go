package image_test

import (
	"context"
	"fmt"
	"log"
	"path/filepath"

	"github.com/kindling-vm/kindling/image"
)

// Import an image saved by `docker save`, with the guest agent, and give
// a sandbox its own copy of the root filesystem, grown to 2 GiB.
func ExampleStore_Import() {
	ctx := context.Background()
	s, err := image.Open("/run/kindling/.images")
	if err != nil {
		log.Fatal(err)
	}
	im, err := s.Import(ctx, "myapp.tar", image.ImportOptions{
		BuildOptions: image.BuildOptions{Agent: "/usr/local/lib/kindling/kindling-agent"},
	})
	if err != nil {
		log.Fatal(err)
	}
	rootfs, _ := im.RootFSFor(im.RootFS[0].Agent)
	dst := filepath.Join("/run/kindling/web", "rootfs.ext4")
	if err := image.Clone(rootfs.Path, dst); err != nil {
		log.Fatal(err)
	}
	if err := image.Grow(ctx, dst, 2<<30); err != nil {
		log.Fatal(err)
	}
	fmt.Println("boot", dst, "with", image.BootArg)
}

// Pull an image from a registry with the docker config's credentials.
func ExampleStore_Pull() {
	s, err := image.Open("/run/kindling/.images")
	if err != nil {
		log.Fatal(err)
	}
	im, err := s.Pull(context.Background(), "alpine:3.20", image.PullOptions{
		Progress: func(e image.Event) {
			if e.Kind == image.EventLayer && e.LayerDone {
				fmt.Printf("layer %d/%d done\n", e.Layer, e.Layers)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(im.ID, im.Config.Entrypoint, im.Config.Cmd)
}
