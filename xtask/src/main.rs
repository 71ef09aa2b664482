//! `cargo xtask`: build, run and test Tessera from the host. This file only parses the
//! command line; each command lives in its own module of the `xtask` library.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use xtask::args::Args;
use xtask::{assets, dtbs, images, run_cmd, test_cmd};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build [--debug] [--config FILE]
                           build the hypervisor and test guests; write target/tessera.bin
                           and target/guests/<name>.bin; with --config, check the VM
                           config and pack it with its images into target/images/
  run [options]            build, then boot in QEMU (interactive; Ctrl-A three times
                           switches VMs, Ctrl-] x quits)
      --board NAME         board folder boards/NAME/ (default: the config's, else
                           qemu-virt); its linux.toml unless --config; the QEMU
                           model, -dtb and serial ports come from its board.toml
      --config FILE        VM config to run (default boards/<board>/linux.toml)
      --no-config          boot the hypervisor alone
      --gic 2|3            GIC version on qemu-virt (default 3; GICv2: at most 8 CPUs)
      --smp N              CPUs (default 4)
      --mem SIZE           RAM, QEMU syntax (default 1G)
      --gdb                wait for a debugger on localhost:1234
      --append \"ARGS\"      hypervisor command line
      --dtb FILE           device tree to boot with instead of QEMU's
      --image FILE         boot FILE instead of target/tessera.bin
      --timeout SECS       stop QEMU after SECS (default 1800; 0 = never)
      --kernel FILE        Linux Image to use for debian:kernel (also build, test)
      --initrd FILE        initramfs to use for debian:initrd (also build, test)
      --debug              build the hypervisor with the dev profile
  test [options]           host unit tests, clippy, then every QEMU scenario; ends with
                           `N passed, N failed`
      --filter SUBSTR      only tests whose name contains SUBSTR
      --jobs N             QEMU scenarios at a time (default 2)
      --no-host            skip the host unit tests and clippy
  bench [options]          build, then run the bench guest under Tessera and bare in QEMU
                           (-icount shift=0,sleep=off: instructions = CNTVCT ticks x 16),
                           each twice, flag any difference, print native/Tessera/ratio
                           per row with the targets; image size, lines of Rust, Linux boot
      --gic 2|3            only this GIC version (default: 3, then 2)
      --json FILE          also write the results as JSON
      --quick              one run per setup, GICv3 only (unless --gic), no Linux boot
  soak [options]           the Linux pair with linux0 rebooted in a loop next to a console
                           flood and interrupt storms; checks the bystander's disk and
                           console and the hypervisor's free memory every cycle
      --minutes N          how long (default 10)
      --gic 2|3            GIC version (default 3)
  image --board NAME [options]
                           build the config's image and the board's boot medium: an
                           SD card / disk image (MBR, one FAT32 partition) with the
                           image and boot.scr (U-Boot boards) or the Raspberry Pi
                           firmware and config.txt; see docs/flashing.md
      --config FILE        VM config (default boards/<board>/linux.toml)
      -o FILE              where to write it (default target/media/<board>-<config>.img)
  dtbs                     regenerate tests/dtbs/ (needs QEMU and dtc)
  assets [options]         fetch Debian's arm64 kernel and busybox, build the guest
                           initramfs (cached in target/guest-assets/); print the paths
      --debian-kernel SUITE/PACKAGE
                           which kernel (default bookworm/linux-image-arm64; the
                           tests also boot trixie/linux-image-arm64)
      --kernel FILE        use this arm64 Image (raw or gzip) instead of Debian's
      --initrd FILE        use this initramfs instead of the built one
  debian SUITE PACKAGE     fetch and unpack a Debian arm64 package with xtask's own apt
                           configuration (target/debian/); print the unpacked tree's path,
                           the package's dependencies and their closure
  help                     this text";

fn main() -> ExitCode {
    match dispatch() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Ok(false)` means it ran but something it checked failed.
fn dispatch() -> Result<bool> {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let mut args = Args::new(argv);
    // Your own Linux kernel/initramfs for configs that say debian:kernel /
    // debian:initrd (any command that builds images).
    if command != "assets" {
        for (flag, var) in [("--kernel", "TESSERA_KERNEL"), ("--initrd", "TESSERA_INITRD")] {
            if let Some(v) = args.value(flag)? {
                std::env::set_var(var, absolute(v)?);
            }
        }
    }
    match command.as_str() {
        "build" => {
            let debug = args.flag("--debug");
            let config = args.value("--config")?.map(absolute).transpose()?;
            args.finish()?;
            let built = images::build(debug)?;
            if let Some(config) = config {
                let img = xtask::board::build_config_image(&config, &built, None)?;
                println!(
                    "{}: {} VM(s), {} bytes",
                    xtask::paths::display(&img.path),
                    img.resolved.vms.len(),
                    std::fs::metadata(&img.path)?.len()
                );
            }
        }
        "run" => {
            let opts = run_cmd::Options {
                gic: args.parsed("--gic")?,
                smp: args.parsed("--smp")?,
                mem: args.value("--mem")?,
                config: args.value("--config")?.map(absolute).transpose()?,
                board: args.value("--board")?,
                no_config: args.flag("--no-config"),
                gdb: args.flag("--gdb"),
                append: args.value("--append")?,
                dtb: args.value("--dtb")?.map(absolute).transpose()?,
                timeout_secs: args.parsed("--timeout")?.unwrap_or(run_cmd::DEFAULT_TIMEOUT_SECS),
                image: args.value("--image")?.map(absolute).transpose()?,
                debug: args.flag("--debug"),
            };
            args.finish()?;
            run_cmd::run(opts)?;
        }
        "test" => {
            let opts = test_cmd::Options {
                filter: args.value("--filter")?,
                jobs: args.parsed("--jobs")?.unwrap_or(2),
                no_host: args.flag("--no-host"),
            };
            args.finish()?;
            return test_cmd::test(&opts);
        }
        "bench" => {
            let opts = xtask::bench::Options {
                gic: args.parsed("--gic")?,
                json: args.value("--json")?.map(absolute).transpose()?,
                quick: args.flag("--quick"),
            };
            args.finish()?;
            return xtask::bench::bench(&opts);
        }
        "soak" => {
            let opts = xtask::soak::Options {
                minutes: args.parsed("--minutes")?.unwrap_or(xtask::soak::DEFAULT_MINUTES),
                gic: args.parsed("--gic")?.unwrap_or(3),
            };
            args.finish()?;
            return xtask::soak::soak(&opts);
        }
        "image" => {
            let opts = xtask::media::Options {
                board: args.value("--board")?.context("image needs --board NAME")?,
                config: args.value("--config")?.map(absolute).transpose()?,
                output: args.value("-o")?.map(absolute).transpose()?,
            };
            args.finish()?;
            xtask::media::image(&opts)?;
        }
        "dtbs" => {
            args.finish()?;
            dtbs::regenerate()?;
        }
        "assets" => {
            let opts = assets::Options {
                kernel: args.value("--kernel")?.map(absolute).transpose()?,
                initrd: args.value("--initrd")?.map(absolute).transpose()?,
                target_dir: None,
                pin: args
                    .value("--debian-kernel")?
                    .map(|p| assets::KernelPin::parse(&p))
                    .transpose()?,
            };
            args.finish()?;
            let a = assets::ensure_assets(&opts)?;
            println!("kernel  {}", a.kernel.display());
            println!("initrd  {}", a.initrd.display());
            println!("version {}", a.version);
        }
        "debian" => {
            let (Some(suite), Some(name)) = (args.positional(), args.positional()) else {
                anyhow::bail!("usage: cargo xtask debian SUITE PACKAGE");
            };
            args.finish()?;
            let target = assets::default_target_dir();
            let info = xtask::debian::info(&target, &suite, &name)?;
            let dir = xtask::debian::unpacked(&target, &suite, &name)?;
            println!("{}", dir.display());
            println!("version {} ({})", info.version, info.architecture);
            println!("depends {}", info.depends.join(" "));
            let all = xtask::debian::closure(&target, &suite, &[&name], &[])?;
            let names: Vec<&str> = all.iter().skip(1).map(|p| p.name.as_str()).collect();
            println!("closure {}", names.join(" "));
        }
        "help" | "--help" | "-h" => println!("{USAGE}"),
        "" => {
            println!("{USAGE}");
            return Ok(false);
        }
        other => anyhow::bail!("unknown command `{other}`\n\n{USAGE}"),
    }
    Ok(true)
}

/// A user-given path, made absolute from the current directory, since QEMU runs from the
/// repository root.
fn absolute(path: String) -> Result<PathBuf> {
    Ok(std::path::absolute(&path)?)
}
