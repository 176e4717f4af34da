//! The cloud-init data sources upstream KubeVirt attaches: NoCloud (`cidata`: `meta-data`,
//! `user-data`) and ConfigDrive (`config-2`: `openstack/latest/meta_data.json`, `user_data`).

use crate::hw::console;
use crate::iso9660::Volume;
use crate::virtio::blk::Disk;

/// The most user-data kept.
pub const MAX_USER_DATA: usize = 8192;

/// What the guest found.
pub struct CloudInit {
    /// `NoCloud` or `ConfigDrive`.
    pub source: &'static str,
    /// Index of the disk it came from (vda = 0).
    pub disk: usize,
    /// The host name: user-data's `hostname:` if set, else the meta-data's.
    pub hostname: [u8; 64],
    /// Its length.
    pub hostname_len: usize,
    /// The instance id.
    pub instance_id: [u8; 64],
    /// Its length.
    pub instance_id_len: usize,
    /// user-data as read (up to [`MAX_USER_DATA`]).
    pub user_data: [u8; MAX_USER_DATA],
    /// Its length.
    pub user_data_len: usize,
    /// Whether a network-config file was there.
    pub network_config: bool,
    /// The SSH public keys user-data and meta-data name.
    pub keys: crate::ssh::keys::AuthorizedKeys,
}

impl CloudInit {
    /// The host name.
    pub fn hostname(&self) -> &[u8] {
        &self.hostname[..self.hostname_len]
    }
    /// The user-data.
    pub fn user_data(&self) -> &[u8] {
        &self.user_data[..self.user_data_len]
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'"' | b'\'' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'"' | b'\'' | b'\r' | b','] = s {
        s = rest;
    }
    s
}

/// The value of a top-level `key: value` line (YAML) or `"key": "value"` member (JSON).
fn value<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    text.split(|&b| b == b'\n' || b == b',' || b == b'{' || b == b'}')
        .find_map(|line| {
            let line = trim(line);
            let colon = line.iter().position(|&b| b == b':')?;
            (trim(&line[..colon]) == key).then(|| trim(&line[colon + 1..]))
        })
}

fn keep(dst: &mut [u8; 64], len: &mut usize, v: &[u8]) {
    *len = v.len().min(dst.len());
    dst[..*len].copy_from_slice(&v[..*len]);
}

/// Looks for a cloud-init volume on `disks`.
pub fn discover(disks: &mut [Option<Disk>]) -> Option<CloudInit> {
    for (index, slot) in disks.iter_mut().enumerate() {
        let Some(disk) = slot else { continue };
        let Some(mut vol) = Volume::open(disk) else {
            continue;
        };
        let (source, meta, user, net) = if vol.label().eq_ignore_ascii_case(b"cidata") {
            (
                "NoCloud",
                &b"meta-data"[..],
                &b"user-data"[..],
                &b"network-config"[..],
            )
        } else if vol.label().eq_ignore_ascii_case(b"config-2") {
            (
                "ConfigDrive",
                &b"openstack/latest/meta_data.json"[..],
                &b"openstack/latest/user_data"[..],
                &b"openstack/latest/network_data.json"[..],
            )
        } else {
            continue;
        };
        let mut ci = CloudInit {
            source,
            disk: index,
            hostname: [0; 64],
            hostname_len: 0,
            instance_id: [0; 64],
            instance_id_len: 0,
            user_data: [0; MAX_USER_DATA],
            user_data_len: 0,
            network_config: vol.find(net).is_some(),
            keys: crate::ssh::keys::AuthorizedKeys::new(),
        };
        let mut meta_text = [0u8; 4096];
        let meta_len = vol.find(meta).map_or(0, |e| vol.read(e, &mut meta_text));
        let meta_text = &meta_text[..meta_len];
        for key in [&b"local-hostname"[..], b"hostname"] {
            if let Some(v) = value(meta_text, key) {
                keep(&mut ci.hostname, &mut ci.hostname_len, v);
                break;
            }
        }
        for key in [&b"instance-id"[..], b"uuid"] {
            if let Some(v) = value(meta_text, key) {
                keep(&mut ci.instance_id, &mut ci.instance_id_len, v);
                break;
            }
        }
        if let Some(e) = vol.find(user) {
            ci.user_data_len = vol.read(e, &mut ci.user_data);
        }
        ci.keys.add_meta_data(meta_text);
        let user_data = &ci.user_data[..ci.user_data_len];
        ci.keys.add_user_data(user_data);
        if let Some(v) = value(ci.user_data(), b"hostname") {
            let v: &[u8] = v;
            let mut h = [0u8; 64];
            let mut n = 0;
            keep(&mut h, &mut n, v);
            ci.hostname = h;
            ci.hostname_len = n;
        }
        return Some(ci);
    }
    None
}

/// Prints what was found.
pub fn report(ci: &CloudInit) {
    console::str("cloud-init: ");
    console::str(ci.source);
    console::str(" data source on vd");
    console::put(b'a' + ci.disk as u8);
    console::str(", instance-id ");
    console::text(&ci.instance_id[..ci.instance_id_len]);
    if ci.network_config {
        console::str(", with network-config");
    }
    console::str("\ncloud-init: hostname ");
    console::text(ci.hostname());
    console::str("\ncloud-init: user-data (");
    console::dec(ci.user_data_len as u64);
    console::str(" bytes):\n");
    print_user_data(ci);
}

/// The user-data, indented.
pub fn print_user_data(ci: &CloudInit) {
    for line in ci.user_data().split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        console::str("  | ");
        console::text(line);
        console::str("\n");
    }
}
