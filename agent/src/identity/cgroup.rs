//! Workload identity from /proc/PID/cgroup paths (container runtimes, kubelet, systemd).
