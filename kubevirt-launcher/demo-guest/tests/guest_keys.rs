//! The guest's authorized-keys parsing (`guest/ssh/keys.rs`, plain `core` code) compiled for the
//! host: which lines of cloud-init's user-data and meta-data become keys the SSH server accepts.

#[allow(dead_code)]
#[path = "../guest/ssh/keys.rs"]
mod keys;

use keys::{AuthorizedKeys, decode, encode};

/// An `ssh-ed25519` line for the 32-byte key `k`.
fn line(k: [u8; 32], comment: &str) -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&k);
    let mut text = [0u8; 80];
    let n = encode(&blob, &mut text);
    format!(
        "ssh-ed25519 {} {comment}",
        String::from_utf8_lossy(&text[..n])
    )
}

#[test]
fn user_data_lists_top_level_and_per_user_are_read_and_nothing_else() {
    let (a, b, c, d) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
    let user_data = format!(
        "#cloud-config\nhostname: x\nssh_authorized_keys:\n  - {}\n  - \"{}\"\n  - ssh-rsa AAAAB3Nza rsa@x\nusers:\n  - name: fedora\n    ssh_authorized_keys: [{}]\nwrite_files:\n  - content: |\n      {}\n",
        line(a, "a@x"),
        line(b, "b@x"),
        line(c, "c@x"),
        line(d, "not a key here"),
    );
    let mut keys = AuthorizedKeys::new();
    keys.add_user_data(user_data.as_bytes());
    assert_eq!(keys.len(), 3, "{user_data}");
    assert!(keys.contains(&a) && keys.contains(&b) && keys.contains(&c));
    assert!(
        !keys.contains(&d),
        "a key-like line outside ssh_authorized_keys"
    );
    // The RSA key is listed but not supported: counted, so the guest can say so.
    assert_eq!(keys.skipped, 1);

    let mut keys = AuthorizedKeys::new();
    keys.add_user_data(
        format!(
            "ssh_authorized_keys:\n- ssh-rsa AAAA r\n- {}\n",
            line(a, "")
        )
        .as_bytes(),
    );
    assert_eq!((keys.len(), keys.skipped), (1, 1));
}

#[test]
fn access_credentials_in_meta_data_are_read() {
    let (a, b) = ([7u8; 32], [9u8; 32]);
    // NoCloud meta-data as the launcher writes it (JSON), and ConfigDrive's meta_data.json.
    let nocloud = format!(
        r#"{{"instance-id":"i","local-hostname":"h","public-keys":{{"0":"{}","1":"ssh-rsa AAAA r"}}}}"#,
        line(a, "a@x")
    );
    let mut keys = AuthorizedKeys::new();
    keys.add_meta_data(nocloud.as_bytes());
    assert_eq!((keys.len(), keys.skipped), (1, 1));
    assert!(keys.contains(&a));
    let config_drive = format!(r#"{{"uuid":"u","public_keys":{{"0":"{}"}}}}"#, line(b, ""));
    keys.add_meta_data(config_drive.as_bytes());
    assert!(keys.contains(&b));
}

#[test]
fn malformed_keys_are_skipped_and_base64_round_trips() {
    let mut keys = AuthorizedKeys::new();
    keys.add_user_data(
        b"ssh_authorized_keys:\n  - ssh-ed25519 AAAA!!\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n",
    );
    assert_eq!((keys.len(), keys.skipped), (0, 2));
    let data: Vec<u8> = (0..=255u8).collect();
    let mut text = [0u8; 400];
    let n = encode(&data, &mut text);
    let mut back = [0u8; 300];
    assert_eq!(decode(&text[..n], &mut back), Some(256));
    assert_eq!(&back[..256], &data[..]);
}
