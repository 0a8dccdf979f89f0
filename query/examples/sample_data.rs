//! Writes the generated sample dataset (`query::sample`: four accounts, 2025-01-01 to
//! 2026-03-01) under a data directory, for trying `jieneng report` and the read API by hand:
//!
//! ```sh
//! cargo run -p query --example sample_data -- /tmp/sample
//! jieneng report --data-dir /tmp/sample --from 2026-01-01 --to 2026-03-01
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: sample_data <data_dir>")?;
    let rows = query::sample::write(std::path::Path::new(&dir))?;
    println!("wrote {rows} readings under {dir}");
    Ok(())
}
