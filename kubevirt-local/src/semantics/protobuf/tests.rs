use super::wire::encode;
use super::*;
use proptest::prelude::*;

/// Encode `v` as message `index`: the inverse of `message`, driven by the same tables.
fn encode_message(v: &Value, index: u16, out: &mut Vec<u8>) {
    let msg = &tables::MESSAGES[usize::from(index)];
    for f in msg.fields {
        if let (Ty::Msg(i), true) = (f.ty, f.flags & Field::INLINE != 0) {
            let mut sub = Vec::new();
            encode_message(v, i, &mut sub);
            if !sub.is_empty() {
                encode::bytes(f.num, &sub, out);
            }
            continue;
        }
        let Some(x) = v.get(f.name) else { continue };
        match f.ty {
            Ty::Map(vt) => {
                for (k, val) in x.as_object().into_iter().flatten() {
                    let mut entry = Vec::new();
                    encode::bytes(1, k.as_bytes(), &mut entry);
                    encode_value(*vt, 2, val, &mut entry);
                    encode::bytes(f.num, &entry, out);
                }
            }
            _ if f.flags & Field::REPEATED != 0 => {
                for item in x.as_array().into_iter().flatten() {
                    encode_value(f.ty, f.num, item, out);
                }
            }
            _ => encode_value(f.ty, f.num, x, out),
        }
    }
}

fn encode_value(ty: Ty, num: u32, v: &Value, out: &mut Vec<u8>) {
    let mut sub = Vec::new();
    match ty {
        Ty::Str => return encode::bytes(num, v.as_str().unwrap().as_bytes(), out),
        Ty::I32 | Ty::I64 => return encode::int(num, v.as_i64().unwrap() as u64, out),
        Ty::Bool => return encode::int(num, u64::from(v.as_bool().unwrap()), out),
        Ty::F64 => return encode::fixed64(num, v.as_f64().unwrap().to_bits(), out),
        Ty::Bytes => {
            let b = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            return encode::bytes(num, &b, out);
        }
        Ty::Msg(i) => encode_message(v, i, &mut sub),
        Ty::Time | Ty::MicroTime => {
            let ts: jiff::Timestamp = v.as_str().unwrap().parse().unwrap();
            encode::int(1, ts.as_second() as u64, &mut sub);
            if ts.subsec_nanosecond() != 0 {
                encode::int(2, ts.subsec_nanosecond() as u64, &mut sub);
            }
        }
        Ty::Quantity => encode::bytes(1, v.as_str().unwrap().as_bytes(), &mut sub),
        Ty::IntOrString => match v {
            Value::String(s) => {
                encode::int(1, 1, &mut sub);
                encode::bytes(3, s.as_bytes(), &mut sub);
            }
            n => {
                encode::int(1, 0, &mut sub);
                encode::int(2, n.as_i64().unwrap() as u64, &mut sub);
            }
        },
        Ty::Raw => encode::bytes(1, v.to_string().as_bytes(), &mut sub),
        Ty::Duration | Ty::Map(_) => unreachable!("not generated"),
    }
    encode::bytes(num, &sub, out);
}

fn body(api_version: &str, kind: &str, obj: &Value) -> Vec<u8> {
    let index = kind_index(api_version, kind).unwrap();
    let mut raw = Vec::new();
    encode_message(obj, index, &mut raw);
    let mut tm = Vec::new();
    encode::bytes(1, api_version.as_bytes(), &mut tm);
    encode::bytes(2, kind.as_bytes(), &mut tm);
    let mut out = MAGIC.to_vec();
    encode::bytes(1, &tm, &mut out);
    encode::bytes(2, &raw, &mut out);
    out
}

/// A small deterministic generator (xorshift), so one proptest seed picks a whole object.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn value(&mut self, ty: Ty, depth: u32) -> Option<Value> {
        Some(match ty {
            Ty::Str => json!(format!("s{}-é", self.below(1000))),
            Ty::I32 => json!(match self.next() as i32 {
                0 => 1,
                x => x,
            }),
            Ty::I64 => json!((self.next() as i64) | 1),
            Ty::Bool => json!(true),
            Ty::F64 => json!((self.below(1000) + 1) as f64 / 8.0),
            Ty::Bytes => {
                json!(base64::engine::general_purpose::STANDARD.encode(self.next().to_le_bytes()))
            }
            Ty::Msg(i) if depth < 5 => self.message(i, depth + 1),
            Ty::Msg(_) | Ty::Duration => return None,
            Ty::Time => json!(
                jiff::Timestamp::from_second(self.below(4_000_000_000) as i64 + 1)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            ),
            Ty::MicroTime => json!(
                jiff::Timestamp::new(self.below(4_000_000_000) as i64 + 1, 123_456_000)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                    .to_string()
            ),
            Ty::Quantity => json!(format!("{}Mi", self.below(4096) + 1)),
            Ty::IntOrString if self.below(2) == 0 => json!(self.below(65535) as i32),
            Ty::IntOrString => json!(format!("{}%", self.below(100))),
            Ty::Raw => json!({"a": self.below(10)}),
            Ty::Map(vt) => {
                let mut m = Map::new();
                for i in 0..=self.below(2) {
                    m.insert(format!("k{i}"), self.value(*vt, depth + 1)?);
                }
                Value::Object(m)
            }
        })
    }

    fn message(&mut self, index: u16, depth: u32) -> Value {
        let mut out = Map::new();
        for f in tables::MESSAGES[usize::from(index)].fields {
            if self.below(3) == 0 {
                continue;
            }
            if let (Ty::Msg(i), true) = (f.ty, f.flags & Field::INLINE != 0) {
                if depth < 5
                    && let Value::Object(m) = self.message(i, depth + 1)
                {
                    out.extend(m);
                }
                continue;
            }
            let v = if f.flags & Field::REPEATED != 0 {
                let items: Option<Vec<Value>> = (0..=self.below(2))
                    .map(|_| self.value(f.ty, depth))
                    .collect();
                items.map(Value::Array)
            } else {
                self.value(f.ty, depth)
            };
            if let Some(v) = v {
                out.insert(f.name.to_string(), v);
            }
        }
        Value::Object(out)
    }
}

fn field(num: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::bytes(num, payload, &mut v);
    v
}

#[test]
fn decodes_a_config_map() {
    let meta = [
        field(1, b"cm"),
        field(11, &[field(1, b"app"), field(2, b"web")].concat()),
    ]
    .concat();
    let raw = [
        field(1, &meta),
        field(2, &[field(1, b"k"), field(2, b"v")].concat()),
    ]
    .concat();
    let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
    let body = [MAGIC, &field(1, &type_meta), &field(2, &raw)].concat();
    let v = decode(&body).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}})
    );
}

#[test]
fn decodes_a_deployment_as_its_json_form() {
    let obj = json!({
        "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": "2024-01-02T03:04:05Z"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "busybox", "image": "busybox",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }]},
            },
        },
    });
    let v = decode(&body("apps/v1", "Deployment", &obj)).unwrap();
    let mut want = obj.clone();
    want["apiVersion"] = json!("apps/v1");
    want["kind"] = json!("Deployment");
    assert_eq!(v, want);
}

#[test]
fn zero_scalars_are_dropped_unless_the_field_is_a_pointer() {
    // Go writes `hostNetwork: false` and `generateName: ""` (non-pointer) but omits them in JSON;
    // `replicas: 0` is a pointer set to zero and must stay.
    let mut raw = Vec::new();
    let mut meta = Vec::new();
    encode::bytes(1, b"web", &mut meta);
    encode::bytes(2, b"", &mut meta);
    encode::bytes(1, &meta, &mut raw);
    let mut spec = Vec::new();
    encode::int(1, 0, &mut spec);
    encode::int(7, 0, &mut spec); // minReadySeconds, non-pointer
    encode::bytes(2, &spec, &mut raw);
    let tm = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
    let body = [MAGIC, &field(1, &tm), &field(2, &raw)].concat();
    let v = decode(&body).unwrap();
    assert_eq!(v["metadata"], json!({"name": "web"}));
    assert_eq!(v["spec"], json!({"replicas": 0}));
}

#[test]
fn every_kind_we_serve_has_a_table() {
    for (v, k) in [
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "ResourceQuota"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("policy/v1", "PodDisruptionBudget"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("networking.k8s.io/v1", "Ingress"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("coordination.k8s.io/v1", "Lease"),
    ] {
        assert!(kind_index(v, k).is_some(), "{v} {k}");
    }
}

#[test]
fn tables_are_sorted_for_binary_search() {
    assert!(
        tables::KINDS
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
    );
    for m in tables::MESSAGES {
        assert!(
            m.fields.windows(2).all(|w| w[0].num < w[1].num),
            "{}",
            m.name
        );
    }
}

#[test]
fn unknown_kinds_are_refused_by_name() {
    let type_meta = [field(1, b"example.com/v1"), field(2, b"Widget")].concat();
    let body = [MAGIC, &field(1, &type_meta)].concat();
    assert_eq!(
        decode(&body),
        Err(ProtobufError::Unsupported("example.com/v1 Widget".into()))
    );
}

#[test]
fn a_bad_field_is_named_by_its_path() {
    let obj = json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}});
    let mut b = body("apps/v1", "Deployment", &obj);
    // Turn the container name's string into invalid UTF-8.
    let at = b.windows(1).rposition(|w| w == b"c").unwrap();
    b[at] = 0xff;
    let err = decode(&b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed protobuf body at spec.template.spec.containers[0].name: string is not UTF-8"
    );
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&[MAGIC, bytes.as_slice()].concat());
    }

    #[test]
    fn every_served_kind_round_trips(seed in 1u64.., which in 0usize..1000) {
        let (api_version, kind, index) = tables::KINDS[which % tables::KINDS.len()];
        let mut g = Gen(seed);
        let obj = g.message(index, 0);
        let decoded = decode(&body(api_version, kind, &obj)).unwrap();
        let mut want = obj.clone();
        want["apiVersion"] = json!(api_version);
        want["kind"] = json!(kind);
        prop_assert_eq!(decoded, want);
    }
}
