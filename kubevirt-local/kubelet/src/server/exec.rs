//! `/exec/{ns}/{pod}/{container}` and `/attach/{ns}/{pod}/{container}`: the kubelet asks the
//! runtime (CRI `Exec` / `Attach`) for a streaming session and redirects the caller (the API
//! server) to the runtime's streaming URL, as upstream's kubelet does with redirected streaming.
//! The query is kubectl's: `command` (repeated), `stdin`, `stdout`, `stderr`, `tty`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_cri::v1 as cri;

use crate::cri::{Cri, client_call, labels};

/// Which streaming session is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// A new process in the container.
    Exec,
    /// The container's main process.
    Attach,
}

/// The streams and command of one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The command (exec only).
    pub command: Vec<String>,
    /// Whether stdin is attached.
    pub stdin: bool,
    /// Whether stdout is attached.
    pub stdout: bool,
    /// Whether stderr is attached.
    pub stderr: bool,
    /// Whether a terminal is allocated.
    pub tty: bool,
}

impl StreamOptions {
    /// Parses kubectl's query (`command` may repeat; booleans are `true`/`1`).
    pub fn parse(query: &str) -> Self {
        let mut o = StreamOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            let yes = v == "true" || v == "1";
            match k {
                "command" => o.command.push(v),
                "stdin" => o.stdin = yes,
                "stdout" => o.stdout = yes,
                "stderr" => o.stderr = yes,
                "tty" => o.tty = yes,
                _ => {}
            }
        }
        o
    }
}

/// Percent-decoding of a query value (`+` is a space, as in forms).
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The running container `container` of pod `ns/pod`, newest first.
async fn running_container(
    cri: &Cri,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Option<String>, crate::cri::CriError> {
    let mut selector = labels::pod_selector(ns, pod);
    selector.insert(labels::CONTAINER_NAME.to_string(), container.to_string());
    let mut found = cri
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: selector,
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .map_err(client_call("ListContainers"))?
        .into_inner()
        .containers;
    found.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(found.into_iter().next().map(|c| c.id))
}

/// Serves one exec or attach request: a redirect to the runtime's streaming URL.
pub async fn stream(
    cri: &Cri,
    session: Session,
    (ns, pod, container): (String, String, String),
    query: &str,
) -> Response {
    let o = StreamOptions::parse(query);
    if session == Session::Exec && o.command.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        )
            .into_response();
    }
    let id = match running_container(cri, &ns, &pod, &container).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("container {container} of pod {ns}/{pod} is not running"),
            )
                .into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let url = match session {
        Session::Exec => cri
            .runtime
            .clone()
            .exec(cri::ExecRequest {
                container_id: id,
                cmd: o.command,
                tty: o.tty,
                stdin: o.stdin,
                stdout: o.stdout,
                // With a terminal, stderr is merged into stdout.
                stderr: o.stderr && !o.tty,
            })
            .await
            .map(|r| r.into_inner().url)
            .map_err(client_call("Exec")),
        Session::Attach => cri
            .runtime
            .clone()
            .attach(cri::AttachRequest {
                container_id: id,
                tty: o.tty,
                stdin: o.stdin,
                stdout: o.stdout,
                stderr: o.stderr && !o.tty,
            })
            .await
            .map(|r| r.into_inner().url)
            .map_err(client_call("Attach")),
    };
    match url {
        Ok(url) => (StatusCode::FOUND, [(header::LOCATION, url)]).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_queries_parse() {
        let o = StreamOptions::parse(
            "command=sh&command=-c&command=echo+a%20b&stdin=true&stdout=1&tty=false",
        );
        assert_eq!(o.command, ["sh", "-c", "echo a b"]);
        assert!(o.stdin && o.stdout && !o.stderr && !o.tty);
        assert_eq!(StreamOptions::parse("command=%zz%4").command, ["%zz%4"]);
        assert_eq!(StreamOptions::parse(""), StreamOptions::default());
    }
}
