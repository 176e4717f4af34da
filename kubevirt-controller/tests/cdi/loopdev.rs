//! A real loop device over a sparse file, detached on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopDevice {
    pub device: PathBuf,
}

impl LoopDevice {
    /// A loop device over a new sparse file of `size` bytes at `backing`; `None` when loop
    /// devices cannot be made here (not root, no loop driver).
    pub fn attach(backing: &Path, size: u64) -> Option<LoopDevice> {
        std::fs::File::create(backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("losetup: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(LoopDevice { device })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
