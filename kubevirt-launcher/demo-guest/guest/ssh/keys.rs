//! The public keys the SSH server accepts: `ssh-ed25519` keys from cloud-init's user-data
//! (`ssh_authorized_keys:` lists, top-level or a user's) and from the meta-data's
//! `public-keys` (upstream's `accessCredentials` with `propagationMethod: noCloud`, or
//! ConfigDrive's `public_keys`). Other key types are counted and ignored: the server
//! (sunset without alloc) verifies ed25519 signatures only.

/// The most keys kept.
pub const MAX_KEYS: usize = 8;
const ED25519: &[u8] = b"ssh-ed25519";

/// Accepted keys.
#[derive(Clone, Copy)]
pub struct AuthorizedKeys {
    keys: [[u8; 32]; MAX_KEYS],
    len: usize,
    /// Keys of other types (or malformed) that were skipped.
    pub skipped: usize,
}

impl AuthorizedKeys {
    /// None.
    pub const fn new() -> AuthorizedKeys {
        AuthorizedKeys {
            keys: [[0; 32]; MAX_KEYS],
            len: 0,
            skipped: 0,
        }
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `key` (an ed25519 public key) is one of them.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.keys[..self.len].iter().any(|k| k == key)
    }

    /// Adds the key of an `authorized_keys` line (`TYPE BASE64 [COMMENT]`).
    fn add_line(&mut self, line: &[u8]) {
        let mut words = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty());
        let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
            return;
        };
        if kind != ED25519 {
            self.skipped += 1;
            return;
        }
        let mut raw = [0u8; 64];
        // The blob: string "ssh-ed25519", string key (32 bytes).
        let key = decode(blob, &mut raw)
            .filter(|&n| n == 4 + ED25519.len() + 4 + 32)
            .filter(|_| raw[..4] == (ED25519.len() as u32).to_be_bytes())
            .filter(|_| &raw[4..4 + ED25519.len()] == ED25519)
            .filter(|_| raw[15..19] == 32u32.to_be_bytes());
        match key {
            Some(_) if self.len < MAX_KEYS => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&raw[19..51]);
                if !self.contains(&k) {
                    self.keys[self.len] = k;
                    self.len += 1;
                }
            }
            _ => self.skipped += 1,
        }
    }

    /// Adds the keys listed under every `ssh_authorized_keys:` of YAML `user_data`.
    pub fn add_user_data(&mut self, user_data: &[u8]) {
        // Indentation of the `ssh_authorized_keys:` key being read, if any.
        let mut list: Option<usize> = None;
        for line in user_data.split(|&b| b == b'\n') {
            let indent = line.iter().take_while(|&&b| b == b' ').count();
            let text = trim(&line[indent..]);
            if text.is_empty() || text.starts_with(b"#") {
                continue;
            }
            if let Some(at) = list {
                match text.strip_prefix(b"-") {
                    Some(item) if indent >= at => {
                        self.add_line(unquote(trim(item)));
                        continue;
                    }
                    _ if indent > at => continue,
                    _ => list = None,
                }
            }
            let (text, item_indent) = match text.strip_prefix(b"- ") {
                Some(t) => (trim(t), indent + 2),
                None => (text, indent),
            };
            if let Some(rest) = text.strip_prefix(b"ssh_authorized_keys:") {
                let rest = trim(rest);
                if let Some(inline) = rest.strip_prefix(b"[") {
                    // Flow style: [key, key]
                    let inline = inline.strip_suffix(b"]").unwrap_or(inline);
                    for k in inline.split(|&b| b == b',') {
                        self.add_line(unquote(trim(k)));
                    }
                } else {
                    list = Some(item_indent);
                }
            }
        }
    }

    /// Adds every `ssh-ed25519 BASE64` found in `meta_data` (NoCloud YAML/JSON or
    /// ConfigDrive JSON: only `public-keys` carries such text).
    pub fn add_meta_data(&mut self, meta_data: &[u8]) {
        let mut rest = meta_data;
        while let Some(at) = find(rest, b"ssh-") {
            let tail = &rest[at..];
            let end = tail
                .iter()
                .position(|&b| b == b'"' || b == b'\n' || b == b'\r')
                .unwrap_or(tail.len());
            self.add_line(&tail[..end]);
            rest = &tail[end..];
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] | [b'\'', inner @ .., b'\''] => inner,
        _ => s,
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes standard base64 (padding optional) into `out`; `None` if malformed or too long.
pub fn decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    let text = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &c in text {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    Some(n)
}

/// Encodes `data` as standard base64 into `out`; returns the length.
pub fn encode(data: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if n >= out.len() {
                return n;
            }
            out[n] = if i <= chunk.len() {
                ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            };
            n += 1;
        }
    }
    n
}
