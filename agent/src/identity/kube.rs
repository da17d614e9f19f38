//! Pods on this node from the Kubernetes API (list + watch), for pod/workload/labels.
