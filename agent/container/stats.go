package container

// Stats are a container's figures as the guest measures them, summed over
// the processes of its PID namespace (the guest has no cgroup per
// container): "container stats ID" prints them as JSON. They are what a
// cgroup would report, as near as /proc allows.
type Stats struct {
	// Pids is the number of processes.
	Pids uint64 `json:"pids"`
	// UserUsec and SystemUsec are the CPU time the processes and the
	// children they waited for used, in microseconds.
	UserUsec   uint64 `json:"user_usec"`
	SystemUsec uint64 `json:"system_usec"`
	// AnonBytes, FileBytes and ShmemBytes are the resident memory by
	// kind (pages shared between processes are counted for each).
	AnonBytes  uint64 `json:"anon_bytes"`
	FileBytes  uint64 `json:"file_bytes"`
	ShmemBytes uint64 `json:"shmem_bytes"`
	// LimitBytes is the guest's memory: the container's bound.
	LimitBytes uint64 `json:"limit_bytes"`
	// PageFaults and MajorFaults count the processes' page faults.
	PageFaults  uint64 `json:"page_faults"`
	MajorFaults uint64 `json:"major_faults"`
}
