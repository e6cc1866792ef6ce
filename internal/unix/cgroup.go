package unix

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// ProcessesInCgroup returns the PIDs of the processes whose cgroup, in any
// hierarchy (v1 or v2), is path (relative to the hierarchy's root, with a
// leading "/", as /proc/PID/cgroup shows it).
func ProcessesInCgroup(path string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err != nil {
			continue // gone meanwhile
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			// hierarchy-ID:controllers:path
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) == 3 && parts[2] == path {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}
