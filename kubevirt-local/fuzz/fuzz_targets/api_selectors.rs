//! libFuzzer target for label and field selectors as clients send them in `?labelSelector=`
//! and `?fieldSelector=`. The input is the selector text, a newline, then a JSON object (the
//! object the selector is matched against; its `metadata.labels` are the labels).
//!
//! Beyond "no panic, no hang":
//! - absent labels behave as empty labels;
//! - for any key a selector accepts, `KEY` and `!KEY` match exactly opposite label sets;
//! - a field selector `F=V` and `F!=V` match exactly opposite objects.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-local/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run api_selectors -- -max_total_time=60`

#![no_main]

use kubevirt_local_fuzz::selector::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The fields the server allows for pods (as `kubectl get pods --field-selector` uses them).
const FIELDS: [&str; 4] = ["spec.nodeName", "status.phase", "spec.restartPolicy", "status.podIP"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (selector, object) = text.split_once('\n').unwrap_or((text, "{}"));
    let object: Value = serde_json::from_str(object).unwrap_or_else(|_| json!({}));
    let labels = object.pointer("/metadata/labels");
    let allowed: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();

    if let Ok(s) = LabelSelector::parse(selector) {
        let _ = s.matches(labels);
        assert_eq!(
            s.matches(None),
            s.matches(Some(&json!({}))),
            "absent and empty labels differ for {selector:?}"
        );
    }
    // A key the parser accepts alone: `KEY` and `!KEY` are opposites.
    let key = selector.split([',', '=', '!', ' ', '(', ')']).next().unwrap_or("");
    if let (Ok(has), Ok(lacks)) = (
        LabelSelector::parse(key),
        LabelSelector::parse(&format!("!{key}")),
    ) && !key.trim().is_empty()
    {
        assert_ne!(
            has.matches(labels),
            lacks.matches(labels),
            "{key:?} and !{key:?} agree"
        );
    }

    if let Ok(s) = FieldSelector::parse(selector, &allowed) {
        let _ = s.matches(&object);
    }
    if let Some((field, value)) = selector.split_once('=')
        && !field.contains(['!', ','])
        && !value.contains([',', '='])
        && let (Ok(is), Ok(is_not)) = (
            FieldSelector::parse(&format!("{field}={value}"), &allowed),
            FieldSelector::parse(&format!("{field}!={value}"), &allowed),
        )
        && !field.trim().is_empty()
    {
        assert_ne!(
            is.matches(&object),
            is_not.matches(&object),
            "{field}={value} and {field}!={value} agree"
        );
    }
});
