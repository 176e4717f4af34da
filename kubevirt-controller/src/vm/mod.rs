//! The VirtualMachine controller: keeps each VM's instance (a VirtualMachineInstance of the
//! same name) in line with its run strategy and state-change requests, and writes the VM's
//! status (`printableStatus`, `created`, `ready`, conditions, start-failure backoff).
//!
//! [`sync::plan`] is the whole decision as a pure function; [`controller`] runs it against an
//! API server with kube-rs.

pub mod backoff;
pub mod controller;
pub mod events;
pub mod instance;
pub mod instancetype;
pub mod printable;
pub mod storage;
pub mod strategy;
pub mod sync;

pub use strategy::{RunStrategy, StrategyError};
pub use sync::{Action, Observed, Plan, plan};
