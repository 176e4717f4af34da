//! The option bodies of the PUT subresources, as upstream's swagger names their fields.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::status::ApiError;

/// `v1.StartOptions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartOptions {
    /// Start the VM paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// `["All"]`: check only, change nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

/// `v1.StopOptions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopOptions {
    /// The VMI's new `terminationGracePeriodSeconds` (0 with `--force`: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<i64>,
    /// `["All"]`: check only, change nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

/// `v1.RestartOptions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartOptions {
    /// The old instance's grace period (0: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
    /// `["All"]`: check only, change nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

/// `v1.PauseOptions`, `v1.UnpauseOptions` and the other VMI actions' bodies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunOptions {
    /// `["All"]`: check only, change nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

/// Decodes an option body (empty: the defaults), naming the field that is wrong.
pub fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::bad_request(format!(
            "Can not unmarshal Request body to struct, path: {}, error: {}",
            e.path(),
            e.inner()
        ))
    })
}

/// Whether `dry_run` asks for a dry run; an unknown directive is refused as upstream does.
pub fn is_dry_run(dry_run: &[String]) -> Result<bool, ApiError> {
    match dry_run {
        [] => Ok(false),
        [all] if all == "All" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "Invalid dryRun: {other:?} (supported: \"All\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_decode_with_upstream_names_and_bad_ones_name_the_field() {
        let s: StartOptions = decode(br#"{"paused": true, "dryRun": ["All"]}"#).unwrap();
        assert!(s.paused && is_dry_run(&s.dry_run).unwrap());
        let s: StopOptions = decode(br#"{"gracePeriod": 0}"#).unwrap();
        assert_eq!(s.grace_period, Some(0));
        let r: RestartOptions = decode(b"").unwrap();
        assert_eq!(r, RestartOptions::default());
        let e = decode::<StopOptions>(br#"{"gracePeriod": "soon"}"#).unwrap_err();
        assert!(e.message.contains("gracePeriod"), "{e}");
        assert!(is_dry_run(&["Some".into()]).is_err());
    }
}
