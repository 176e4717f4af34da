//! The little DER this crate reads and writes in X.509 certificates: the subject's common name
//! and organisations (a client certificate's user and groups), and a certificate's subject and
//! issuer replaced before it is signed again (rcgen keeps one value per attribute type, and a
//! user has many groups, each an `O`).

/// A DER element: its tag, its content, and the whole element (header included).
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// The tag byte.
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// Header and content.
    pub raw: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
/// `[0] EXPLICIT` (the certificate's version).
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
/// id-at-organizationName, 2.5.4.10.
const ORGANIZATION: [u8; 3] = [0x55, 0x04, 0x0a];

/// The first element of `input` and what follows it; `None` when it is not DER this reader
/// understands (multi-byte tags, indefinite or over-long lengths, truncation).
pub fn next(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((
        Element {
            tag,
            content: &rest[..len],
            raw: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The elements `input` is made of, in order; `None` if any is malformed.
pub fn children(input: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (e, r) = next(rest)?;
        out.push(e);
        rest = r;
    }
    Some(out)
}

/// `tag` around `content`, with a definite length.
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The `Certificate` of `der`: its `TBSCertificate`'s elements, the signature algorithm, and
/// the index of the subject among the former.
fn certificate(der: &[u8]) -> Option<(Vec<Element<'_>>, Element<'_>, usize)> {
    let (cert, _) = next(der).filter(|(c, _)| c.tag == SEQUENCE)?;
    let parts = children(cert.content)?;
    let tbs = parts.first().filter(|t| t.tag == SEQUENCE)?;
    let alg = *parts.get(1)?;
    let fields = children(tbs.content)?;
    // version? serial signature issuer validity subject ...
    let subject = if fields.first()?.tag == VERSION { 5 } else { 4 };
    fields.get(subject).filter(|s| s.tag == SEQUENCE)?;
    Some((fields, alg, subject))
}

/// The subject `Name` of certificate `der` (the whole element).
pub fn subject(der: &[u8]) -> Option<&[u8]> {
    let (fields, _, at) = certificate(der)?;
    Some(fields[at].raw)
}

/// The common name and the organisations (in order) of subject `name` (a DER `Name`). Values
/// that are not text (or not valid UTF-8) are skipped.
pub fn names(name: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    let (seq, _) = next(name).filter(|(s, _)| s.tag == SEQUENCE)?;
    let mut cn = None;
    let mut orgs = Vec::new();
    for rdn in children(seq.content)? {
        if rdn.tag != SET {
            return None;
        }
        for atv in children(rdn.content)? {
            let pair = children(atv.content)?;
            let (Some(oid), Some(value)) = (pair.first(), pair.get(1)) else {
                return None;
            };
            if oid.tag != OID {
                return None;
            }
            let text = match value.tag {
                UTF8_STRING | PRINTABLE_STRING | IA5_STRING => {
                    std::str::from_utf8(value.content).ok().map(str::to_string)
                }
                // Teletex as Go reads it: Latin-1.
                T61_STRING => Some(value.content.iter().map(|b| char::from(*b)).collect()),
                _ => None,
            };
            let Some(text) = text else { continue };
            if oid.content == COMMON_NAME {
                cn = Some(text);
            } else if oid.content == ORGANIZATION {
                orgs.push(text);
            }
        }
    }
    Some((cn, orgs))
}

/// A `Name` of one common name and one organisation per entry of `orgs` (each its own RDN,
/// UTF8String), as kube-apiserver's client certificates carry user and groups.
pub fn name(cn: &str, orgs: &[String]) -> Vec<u8> {
    let rdn = |oid: &[u8], value: &str| {
        let atv = [encode(OID, oid), encode(UTF8_STRING, value.as_bytes())].concat();
        encode(SET, &encode(SEQUENCE, &atv))
    };
    let mut rdns: Vec<u8> = orgs.iter().flat_map(|o| rdn(&ORGANIZATION, o)).collect();
    rdns.extend(rdn(&COMMON_NAME, cn));
    encode(SEQUENCE, &rdns)
}

/// The `TBSCertificate` of `der` with its issuer and subject replaced, and its signature
/// algorithm element, ready to be signed again.
pub fn replace_names(der: &[u8], issuer: &[u8], subject: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (fields, alg, at) = certificate(der)?;
    let mut content = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if i == at {
            content.extend_from_slice(subject);
        } else if i + 2 == at {
            content.extend_from_slice(issuer);
        } else {
            content.extend_from_slice(f.raw);
        }
    }
    Some((encode(SEQUENCE, &content), alg.raw.to_vec()))
}

/// A `Certificate` from its signed parts.
pub fn assemble(tbs: &[u8], alg: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(signature);
    encode(SEQUENCE, &[tbs, alg, &encode(BIT_STRING, &bits)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_encode_and_decode_in_every_form() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let der = encode(SEQUENCE, &content);
            let (e, rest) = next(&der).unwrap();
            assert!(rest.is_empty());
            assert_eq!(
                (e.tag, e.content.len(), e.raw.len()),
                (SEQUENCE, len, der.len())
            );
        }
        assert!(
            next(&[SEQUENCE, 0x85, 1, 1, 1, 1, 1]).is_none(),
            "over-long"
        );
        assert!(next(&[SEQUENCE, 3, 1]).is_none(), "truncated");
        assert!(next(&[0x1f, 0]).is_none(), "multi-byte tag");
    }

    #[test]
    fn a_name_reads_back_with_every_organisation() {
        let groups = vec!["dev".to_string(), "system:masters".into(), "ünï".into()];
        let n = name("alice", &groups);
        assert_eq!(names(&n).unwrap(), (Some("alice".into()), groups));
    }

    #[test]
    fn an_rcgen_certificate_names_its_subject() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bob");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ops");
        let cert = params.self_signed(&key).unwrap();
        let (cn, orgs) = names(subject(cert.der()).unwrap()).unwrap();
        assert_eq!(
            (cn.as_deref(), orgs),
            (Some("bob"), vec!["ops".to_string()])
        );
    }

    #[test]
    fn garbage_is_no_name() {
        assert!(subject(b"not a certificate").is_none());
        assert!(names(&[SEQUENCE, 2, 0x05, 0x00]).is_none());
    }
}
