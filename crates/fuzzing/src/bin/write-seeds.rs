//! `write-seeds DIR`: writes each target's seed inputs to `DIR/<target>/`,
//! the corpus directory `cargo fuzz run <target> DIR/<target>` starts from.
#![forbid(unsafe_code)]
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write-seeds DIR");
        std::process::exit(2);
    };
    for (target, name, input) in atlas_fuzzing::seeds() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        std::fs::write(target_dir.join(format!("seed-{name}")), input)?;
    }
    Ok(())
}
