use super::CliError;
use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::all_crds;
use std::io::Write;
use std::process::ExitCode;

pub(super) fn run(descriptions: bool, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let crds = all_crds(&CrdOptions { descriptions });
    for crd in &crds {
        let yaml =
            kubevirt_api::codec::to_yaml(crd).map_err(|e| CliError::Render(e.to_string()))?;
        writeln!(out, "---")?;
        out.write_all(yaml.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
