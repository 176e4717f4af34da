pub(super) fn run(
    _: &[std::path::PathBuf],
    _: Option<super::Output>,
    _: &mut dyn std::io::Write,
) -> Result<std::process::ExitCode, super::CliError> {
    todo!()
}
