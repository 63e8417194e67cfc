//! Generate (or load) the cluster PKI locally. Never touches a node. In plan mode the
//! work happens in a scratch copy inside the (0700) state directory, never in a shared
//! temporary directory, so a dry run leaves the state's PKI as it was; the copy holds CA keys,
//! and is removed when the run ends, however it ends (see [`crate::state::Scratch`]).

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
                    let scratch = ctx.state.create_scratch()?;
                    let copy = scratch.path().join("pki");
                    // Held by the context before the first key is copied in.
                    ctx.scratch = Some(scratch);
                    if ctx.state.pki_dir().exists() {
                        copy_dir(&ctx.state.pki_dir(), &copy)?;
                    }
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
