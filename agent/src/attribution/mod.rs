//! The mapping file: ordered rules that turn a workload (and request headers) into a team.
