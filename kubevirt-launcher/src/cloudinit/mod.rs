//! Cloud-init disks (being written).
