//! Which node a console name means in a board's DTB: `stdout-path` and
//! `tessera.console=` may each give a path or an `/aliases` name (with
//! `:options` after it), as the hypervisor resolves them
//! (src/platform/mod.rs, `resolve_path`).

use anyhow::{anyhow, bail, Result};

/// The node path `name` stands for in `dtb`: itself if it starts with `/`,
/// else the alias it names; an error if that node is not in the tree.
pub fn resolve(dtb: &[u8], name: &str) -> Result<String> {
    let fdt = fdt::Fdt::new(dtb).map_err(|e| anyhow!("board DTB: {e:?}"))?;
    let name = name.split(':').next().unwrap_or(name);
    let path = if name.starts_with('/') {
        name.to_owned()
    } else {
        fdt.find_node("/aliases")
            .and_then(|a| a.property(name))
            .and_then(|p| std::str::from_utf8(p.value).ok())
            .map(|s| s.trim_end_matches('\0').to_owned())
            .ok_or_else(|| anyhow!("no alias {name:?} in the board DTB's /aliases"))?
    };
    if fdt.find_node(&path).is_none() {
        bail!("the board DTB has no node {path}");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_paths_resolve_on_the_rpi4_dtb() {
        let dtb = std::fs::read(crate::paths::root().join("tests/dtbs/bcm2711-rpi-4-b.dtb")).unwrap();
        assert_eq!(resolve(&dtb, "serial1:115200n8").unwrap(), "/soc/serial@7e215040");
        assert_eq!(resolve(&dtb, "serial0").unwrap(), "/soc/serial@7e201000");
        assert_eq!(
            resolve(&dtb, "/soc/serial@7e201000").unwrap(),
            "/soc/serial@7e201000"
        );
        let e = resolve(&dtb, "serial9").unwrap_err().to_string();
        assert!(e.contains("no alias \"serial9\""), "{e}");
        let e = resolve(&dtb, "/soc/serial@0").unwrap_err().to_string();
        assert!(e.contains("no node /soc/serial@0"), "{e}");
    }
}
