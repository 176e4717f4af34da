//! Watches: newline-delimited JSON events, resumable from a resourceVersion (410 Expired beyond
//! the history), with bookmarks, selectors and Table/metadata forms.

use super::objects::{Shape, resolve};
use super::route::Target;
use super::state::State;
use super::table::{Include, partial_metadata, table};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::selector::{FieldSelector, LabelSelector};

use super::watch_buffer::{self, Receiver, Sender};
use crate::storage::{Event, EventType};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// Start a watch; returns the channel of encoded lines (each ends with `\n`).
pub fn start(
    state: Arc<State>,
    target: &Target,
    query: &BTreeMap<String, String>,
    shape: Shape,
) -> Result<Receiver, ApiError> {
    let res = resolve(&state, target)?;
    let (labels, fields) = super::objects::selectors(&res, query)?;
    let since: Option<u64> = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let namespace = target.namespace.clone();
    let version = target.version.clone();

    // Subscribe before reading the snapshot or the history, so nothing falls in between.
    let live = state.store.subscribe();
    let (initial, mut last_rv) = match since {
        Some(rv) if !send_initial => match state.store.events_since(&res.storage_name(), rv) {
            Ok(events) => (events, rv),
            // Too old: the answer is a 200 stream with one ERROR event (410), as Kubernetes does.
            Err(crate::storage::StoreError::Expired { requested, oldest }) => {
                let (tx, rx) = watch_buffer::channel(state.watch_buffered.clone());
                let status =
                    ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
                        .status();
                let text = line("ERROR", &status);
                tokio::spawn(async move {
                    let _ = tx.send(text).await;
                });
                return Ok(rx);
            }
            Err(e) => return Err(e.into()),
        },
        _ => {
            let (items, rv) = state
                .store
                .list(&res.storage_name(), namespace.as_deref())?;
            let events = items
                .into_iter()
                .map(|o| Event {
                    rv,
                    kind: EventType::Added,
                    key: crate::storage::ObjectKey::new(res.storage_name(), "", ""),
                    object: o,
                })
                .collect();
            (events, rv)
        }
    };
    let (tx, rx) = watch_buffer::channel(state.watch_buffered.clone());
    let filter = Filter {
        res: res.clone(),
        namespace,
        labels,
        fields,
        version,
        shape,
    };
    tokio::spawn(async move {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        for e in initial {
            last_rv = last_rv.max(e.rv);
            if let Some(line) = filter.encode(&e)
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
        if send_initial && bookmarks {
            let _ = tx.send(filter.bookmark(last_rv, true)).await;
        }
        run_live(live, tx, filter, last_rv, bookmarks, deadline).await;
    });
    Ok(rx)
}

async fn run_live(
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: Sender,
    filter: Filter,
    mut last_rv: u64,
    bookmarks: bool,
    deadline: Option<tokio::time::Instant>,
) {
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        let sleep_until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(e) => {
                    if e.rv <= last_rv {
                        continue;
                    }
                    last_rv = e.rv;
                    if let Some(line) = filter.encode(&e)
                        && tx.send(line).await.is_err() {
                            return;
                        }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // This watcher fell behind the live stream: make it re-list.
                    let _ = tx.send(expired(last_rv)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if bookmarks => {
                if tx.send(filter.bookmark(last_rv, false)).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                if bookmarks {
                    let _ = tx.send(filter.bookmark(last_rv, false)).await;
                }
                return;
            }
            _ = tx.closed() => return,
        }
    }
}

/// One watch event's line: `{"type":...,"object":...}` and a newline (`kind` is `ADDED`,
/// `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`).
fn line(kind: &str, object: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Line<'a, O> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a O,
    }
    let mut text = serde_json::to_string(&Line { kind, object })
        // Maps with string keys and JSON values always serialise.
        .unwrap_or_default();
    text.push('\n');
    text
}

/// A stored object as the watcher's version shows it: its `apiVersion` and `kind` replaced,
/// written straight from the shared event (no copy of the object).
struct Typed<'a> {
    api_version: &'a str,
    kind: &'a str,
    object: &'a Value,
}

impl Serialize for Typed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.object.as_object() else {
            return self.object.serialize(s);
        };
        let rest = fields
            .iter()
            .filter(|(k, _)| *k != "apiVersion" && *k != "kind");
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("apiVersion", self.api_version)?;
        map.serialize_entry("kind", self.kind)?;
        for (k, v) in rest {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn expired(rv: u64) -> String {
    let status = ApiError::expired(format!("too old resource version: {rv}")).status();
    line("ERROR", &status)
}

struct Filter {
    res: Arc<Resource>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    version: String,
    shape: Shape,
}

impl Filter {
    fn encode(&self, e: &Event) -> Option<String> {
        if !e.key.name.is_empty() && e.key.resource != self.res.storage_name() {
            return None;
        }
        // Every watcher of a resource receives the same shared event: it is read, not copied
        // (only the events.k8s.io view converts it).
        let shown = self.res.present_ref(&e.object);
        let o: &Value = &shown;
        if let Some(ns) = &self.namespace
            && o["metadata"]["namespace"].as_str() != Some(ns.as_str())
        {
            return None;
        }
        if !(self.labels.matches(o["metadata"].get("labels")) && self.fields.matches(o)) {
            return None;
        }
        let api_version = self.res.api_version(&self.version);
        let typed = Typed {
            api_version: &api_version,
            kind: &self.res.kind,
            object: o,
        };
        let line = match self.shape {
            Shape::Full => line(e.kind.as_str(), &typed),
            Shape::Metadata => line(e.kind.as_str(), &partial_metadata(o)),
            Shape::Table => {
                let rv = o["metadata"]["resourceVersion"].as_str().unwrap_or("");
                let mut obj = o.clone();
                obj["apiVersion"] = json!(api_version);
                obj["kind"] = json!(self.res.kind);
                let table = table(
                    &self.res,
                    std::slice::from_ref(&obj),
                    rv,
                    "",
                    Include::Metadata,
                    jiff::Timestamp::now(),
                );
                line(e.kind.as_str(), &table)
            }
        };
        Some(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> String {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object: Value = json!({"kind": self.res.kind, "apiVersion": self.res.api_version(&self.version), "metadata": meta});
        line("BOOKMARK", &object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_watchers_version_and_the_object_once() {
        let stored = json!({
            "apiVersion": "kubevirt.io/v1alpha3",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": "a", "resourceVersion": "7"},
            "spec": {"domain": {}},
        });
        let typed = Typed {
            api_version: "kubevirt.io/v1",
            kind: "VirtualMachineInstance",
            object: &stored,
        };
        let text = line(EventType::Modified.as_str(), &typed);
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(text.matches("\"apiVersion\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"kind\"").count(), 1, "{text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let mut expected = stored.clone();
        expected["apiVersion"] = json!("kubevirt.io/v1");
        assert_eq!(
            parsed,
            json!({"type": "MODIFIED", "object": expected}),
            "{text}"
        );
    }
}
