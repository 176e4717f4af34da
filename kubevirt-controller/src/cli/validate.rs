//! `validate`: parse, default and validate documents the way upstream's API server and webhooks would.

use super::{CliError, Output};
use kubevirt_api::codec::{DecodeError, documents_from_yaml, to_yaml};
use kubevirt_api::defaults::{ClusterDefaults, apply};
use kubevirt_api::object::Object;
use kubevirt_api::validation::validate;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One problem found in one document.
struct Problem {
    location: String,
    line: String,
}

pub(super) fn run(
    files: &[PathBuf],
    output: Option<Output>,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let mut problems = Vec::new();
    let mut objects = Vec::new();
    for file in files {
        check_file(file, &mut problems, &mut objects);
    }
    for p in &problems {
        writeln!(out, "{}: {}", p.location, p.line)?;
    }
    if !problems.is_empty() {
        return Ok(ExitCode::from(1));
    }
    match output {
        Some(Output::Yaml) => {
            for o in &objects {
                let v = o.encode().map_err(|e| CliError::Render(e.to_string()))?;
                writeln!(out, "---")?;
                out.write_all(
                    to_yaml(&v)
                        .map_err(|e| CliError::Render(e.to_string()))?
                        .as_bytes(),
                )?;
            }
        }
        Some(Output::Json) => {
            for o in &objects {
                let v = o.encode().map_err(|e| CliError::Render(e.to_string()))?;
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v)
                        .map_err(|e| CliError::Render(e.to_string()))?
                )?;
            }
        }
        None => writeln!(out, "{} document(s) valid", objects.len())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
    }
}

fn check_file(file: &Path, problems: &mut Vec<Problem>, objects: &mut Vec<Object>) {
    let name = file.display().to_string();
    let text = match read(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem {
                location: name,
                line: format!("cannot read: {e}"),
            });
            return;
        }
    };
    let docs = match documents_from_yaml(&text) {
        Ok(d) => d,
        Err(e) => {
            problems.push(Problem {
                location: name,
                line: e.to_string(),
            });
            return;
        }
    };
    let cluster = ClusterDefaults::default();
    for doc in docs {
        let at = |obj: Option<&Object>| match obj {
            Some(o) => format!(
                "{name}[{}] {}/{}",
                doc.index,
                o.kind(),
                o.name().unwrap_or("<unnamed>")
            ),
            None => format!("{name}[{}]", doc.index),
        };
        match Object::decode(&doc.value) {
            Ok(mut obj) => {
                apply(&mut obj, &cluster);
                let mut errs: Vec<String> = validate(&obj).iter().map(|e| e.to_string()).collect();
                if obj.kind() == "KubeVirt" {
                    // The operator's checks of the spec and `spec.configuration`, the same the
                    // components' configuration watcher applies (`crate::clusterconfig`).
                    let spec = &doc.value["spec"];
                    let more = crate::operator::config::validate(spec);
                    errs.extend(more.iter().map(|e| e.to_string()));
                }
                if errs.is_empty() {
                    objects.push(obj);
                } else {
                    problems.extend(errs.into_iter().map(|line| Problem {
                        location: at(Some(&obj)),
                        line,
                    }));
                }
            }
            Err(DecodeError::UnknownFields(paths)) => {
                problems.extend(paths.iter().map(|p| Problem {
                    location: at(None),
                    line: format!("{p}: unknown field"),
                }))
            }
            Err(e) => problems.push(Problem {
                location: at(None),
                line: e.to_string(),
            }),
        }
    }
}
