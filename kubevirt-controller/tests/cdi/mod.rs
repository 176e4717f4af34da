//! Helpers of the CDI importer's tests: a real HTTP(S) file server, images made with real
//! qemu-img, and a real loop device. Each test binary uses a part of them.
#![allow(dead_code)]

pub mod harness;
pub mod images;
pub mod loopdev;
pub mod proxy;
pub mod server;
