//! Generate (or load) the cluster PKI locally. Never touches a node. In plan mode the
//! work happens in a scratch copy, so a dry run leaves the state directory as it was.

use super::{Context, Phase, PhaseFuture};
use crate::phases::Mode;
use crate::report::Event;

pub struct GeneratePki;

impl Phase for GeneratePki {
    fn title(&self) -> &'static str {
        "Generate certificates"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let dir = match ctx.settings.mode {
                Mode::Apply => ctx.state.pki_dir(),
                Mode::Plan => {
                    let scratch = tempfile::tempdir()?;
                    let copy = scratch.path().join("pki");
                    if ctx.state.pki_dir().exists() {
                        copy_dir(&ctx.state.pki_dir(), &copy)?;
                    }
                    ctx.scratch = Some(scratch);
                    copy
                }
            };
            let (pki, report) = crate::pki::ensure(&dir, &ctx.inventory)?;
            let message = report.to_string();
            ctx.report.event(Event::Info {
                message: &format!("    {message}"),
            });
            ctx.pki = Some(pki);
            Ok(())
        })
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    crate::state::private_dir(to).map_err(std::io::Error::other)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
