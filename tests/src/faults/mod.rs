//! The fault suite (`vault-faults`, `make test-faults`): real nodes in network namespaces, a
//! recorded concurrent workload, nemeses, and a linearizability checker.

pub mod checker;
pub mod lab;
pub mod scenario;
pub mod workload;
