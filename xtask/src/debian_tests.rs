use super::*;
use std::io::Write;

const PACKAGES: &str = "\
Package: linux-image-arm64
Source: linux-signed-arm64 (6.1.153+1)
Version: 6.1.153-1
Installed-Size: 13
Depends: linux-image-6.1.0-39-arm64 (= 6.1.153-1)
Architecture: arm64
Description: Linux for 64-bit ARMv8 machines (meta-package)
 This package depends on the latest Linux kernel
 and modules for use on arm64 machines.

Package: busybox-static
Version: 1:1.35.0-4+b3
Architecture: arm64
Source-Package: linux-image-arm64
Pre-Depends: libc6 (>= 2.34)
Depends: libfoo1:any | libfoo0, bar [arm64] <!nocheck>,
 baz (<< 2)

Package: linux-image-arm64
Version: 6.1.99-1
Architecture: arm64
Depends: linux-image-6.1.0-30-arm64
";

#[test]
fn finds_packages_in_a_list() {
    let found = find_in_packages(PACKAGES, "linux-image-arm64");
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].version, "6.1.153-1");
    assert_eq!(found[0].depends, ["linux-image-6.1.0-39-arm64"]);
    assert_eq!(found[0].architecture, "arm64");
    let bb = find_in_packages(PACKAGES, "busybox-static");
    assert_eq!(bb.len(), 1);
    assert_eq!(bb[0].version, "1:1.35.0-4+b3");
    // Pre-Depends first; alternatives, arch qualifiers, restrictions and continuation lines.
    assert_eq!(bb[0].depends, ["libc6", "libfoo1", "bar", "baz"]);
    // A name that is only a prefix of another, or a field that ends in "Package", is no match.
    assert!(find_in_packages(PACKAGES, "busybox").is_empty());
    assert!(find_in_packages(PACKAGES, "linux-image").is_empty());
    assert!(find_in_packages("", "x").is_empty());
    // The last paragraph has no trailing blank line.
    assert_eq!(
        find_in_packages(PACKAGES, "linux-image-arm64")[1].version,
        "6.1.99-1"
    );
}

#[test]
fn dependency_fields() {
    assert_eq!(dependency_names(""), Vec::<String>::new());
    assert_eq!(
        dependency_names("a (>= 1), b:any, c | d, e [!amd64]"),
        ["a", "b", "c", "e"]
    );
}

#[test]
fn debian_version_order() {
    use Ordering::*;
    let cases = [
        ("1.0", "1.0", Equal),
        ("1.0", "1.1", Less),
        ("1.10", "1.9", Greater),
        ("1.0~rc1", "1.0", Less),
        ("1.0~~", "1.0~", Less),
        ("1.0", "1.0+b1", Less),
        ("1.0a", "1.0+", Less),
        ("1:0.1", "2.0", Greater),
        ("6.1.153-1", "6.1.99-1", Greater),
        ("6.12.48-1", "6.12.48+deb13-1", Less),
        ("1.0-1", "1.0-1.1", Less),
        ("1.0-10", "1.0-9", Greater),
        ("001", "1", Equal),
        ("1:1.35.0-4+b3", "1:1.35.0-4", Greater),
    ];
    for (a, b, want) in cases {
        assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
    }
}

#[test]
fn sources_and_config_stay_in_their_directory() {
    let s = sources_list("bookworm", None);
    assert!(s.contains(&format!(
        "deb [arch=arm64 signed-by={KEYRING}] http://deb.debian.org/debian bookworm main non-free-firmware\n"
    )));
    assert!(sources_list("bookworm-security", None)
        .contains("http://deb.debian.org/debian-security bookworm-security main"));
    assert!(sources_list("trixie", Some("http://m/debian")).contains(" http://m/debian trixie "));

    let conf = apt_conf(Path::new("/t/debian/trixie"));
    // Every directory apt uses is ours, and Dir::Etc (whose Parts hold the host's
    // apt.conf.d, preferences and sources) points below the suite's directory.
    for key in [
        "Dir::Etc ",
        "Dir::State ",
        "Dir::State::status ",
        "Dir::Cache ",
        "Dir::Log ",
    ] {
        let line = conf
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key}"));
        assert!(line.contains("\"/t/debian/trixie/"), "{line}");
    }
    assert!(
        conf.lines()
            .filter(|l| !l.starts_with("//"))
            .all(|l| !l.contains("\"/etc")),
        "{conf}"
    );
    assert!(conf.contains("APT::Architectures { \"arm64\"; };"));
}

#[test]
fn suite_names() {
    for ok in ["bookworm", "trixie", "bookworm-backports", "sid"] {
        assert!(check_suite_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-x", "../etc", "a/b", "Bookworm", "a b"] {
        assert!(check_suite_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(sanitize("1:1.35.0-4+b3"), "1_1.35.0-4+b3");
}

/// A .deb as dpkg-deb builds it: ar archive of debian-binary, control.tar.xz, data.tar.*.
fn deb(compression: &str) -> Vec<u8> {
    let mut data = tar::Builder::new(Vec::new());
    let add_dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    add_dir(&mut data, "./");
    add_dir(&mut data, "./usr/");
    add_dir(&mut data, "./usr/bin/");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(5);
    h.set_cksum();
    data.append_data(&mut h, "./usr/bin/tool", &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_cksum();
    data.append_link(&mut h, "./usr/bin/alias", "tool").unwrap();
    let tar = data.into_inner().unwrap();
    let member = match compression {
        "" => tar,
        ".xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        ".zst" => ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest),
        ".gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        _ => unreachable!(),
    };
    let mut ar = ar::Builder::new(Vec::new());
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.xz", b"not looked at".to_vec()),
        (&format!("data.tar{compression}")[..], member),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        ar.append(&header, &body[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-debian-{name}-{}", unique()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn unpacks_debs_of_every_compression() {
    for compression in ["", ".xz", ".zst", ".gz"] {
        let dir = scratch("unpack");
        unpack_deb(&deb(compression)[..], &dir).unwrap_or_else(|e| panic!("{compression}: {e:#}"));
        assert_eq!(
            fs::read(dir.join("usr/bin/tool")).unwrap(),
            b"hello",
            "{compression}"
        );
        assert_eq!(
            fs::read_link(dir.join("usr/bin/alias")).unwrap(),
            Path::new("tool")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn rejects_what_is_not_a_deb() {
    let dir = scratch("bad");
    assert!(unpack_deb(&b"!<arch>\n"[..], &dir).is_err(), "no members");
    assert!(unpack_deb(&b"PK\x03\x04"[..], &dir).is_err(), "not ar");
    // A data member before debian-binary is not a .deb.
    let mut ar = ar::Builder::new(Vec::new());
    ar.append(&ar::Header::new(b"data.tar".to_vec(), 0), &[][..])
        .unwrap();
    assert!(unpack_deb(&ar.into_inner().unwrap()[..], &dir).is_err());
    // An unknown compression.
    let mut ar = ar::Builder::new(Vec::new());
    ar.append(&ar::Header::new(b"debian-binary".to_vec(), 4), &b"2.0\n"[..])
        .unwrap();
    ar.append(&ar::Header::new(b"data.tar.lz4".to_vec(), 1), &b"x"[..])
        .unwrap();
    assert!(unpack_deb(&ar.into_inner().unwrap()[..], &dir).is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_unpacks_leave_one_whole_tree() {
    let base = scratch("race");
    let deb_path = base.join("p_1_arm64.deb");
    fs::write(&deb_path, deb(".xz")).unwrap();
    let dest = base.join("pkgs/p_1");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| unpack_into_place(&deb_path, &dest).unwrap());
        }
    });
    assert_eq!(fs::read(dest.join("usr/bin/tool")).unwrap(), b"hello");
    // No scratch directory is left behind.
    let left: Vec<_> = fs::read_dir(base.join("pkgs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("p_1")]);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn decompresses_modules() {
    let plain = b"\x7fELF module".to_vec();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&plain).unwrap();
    let xz = xz.finish().unwrap();
    let zst = ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    for data in [&plain, &xz, &zst, &gz] {
        assert_eq!(decompress(data).unwrap(), plain);
    }
    assert!(decompress(b"\xfd7zXZ\0garbage").is_err());
}

#[test]
fn lists_state_and_lookup_of_a_private_tree() {
    let target = scratch("lists");
    let apt = Apt {
        suite: "bookworm".into(),
        root: target.join("debian/bookworm"),
    };
    apt.write_config().unwrap();
    assert_eq!(apt.lists_state(), ListsState::Missing);
    let lists = apt.lists();
    fs::write(
        lists.join("deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages"),
        PACKAGES,
    )
    .unwrap();
    assert_eq!(apt.lists_state(), ListsState::Missing, "never updated");
    fs::write(apt.root.join("state/updated"), b"").unwrap();
    assert_eq!(apt.lists_state(), ListsState::Fresh);
    let old = std::time::SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(apt.root.join("state/updated"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(apt.lists_state(), ListsState::Stale);
    // The highest version of the lists wins; the directory name is the sanitized version.
    let pkg = apt.lookup("linux-image-arm64").unwrap().unwrap();
    assert_eq!(pkg.version, "6.1.153-1");
    assert!(apt.lookup("nope").unwrap().is_none());
    let bb = apt.lookup("busybox-static").unwrap().unwrap();
    assert_eq!(
        apt.pkg_dir(&bb),
        apt.root.join("pkgs/busybox-static_1_1.35.0-4+b3")
    );
    // The configuration written names only paths below the target.
    let conf = fs::read_to_string(apt.conf()).unwrap();
    assert!(conf.contains(&format!("Dir::State \"{}/state\"", apt.root.display())));
    fs::remove_dir_all(&target).unwrap();
}

#[test]
fn dependency_closure() {
    let lists = "\
Package: socat
Version: 1
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.0), libwrap0 | tcpd, debconf-2.0

Package: libssl3
Version: 1
Depends: libc6

Package: libwrap0
Version: 1
Depends: libc6, libnsl2

Package: libnsl2
Version: 1

Package: libc6
Version: 1
Depends: libgcc-s1

Package: libgcc-s1
Version: 1
Depends: libc6
";
    let lookup = |name: &str| Ok(find_in_packages(lists, name).pop());
    let names = |pkgs: Vec<Package>| pkgs.into_iter().map(|p| p.name).collect::<Vec<_>>();
    // Each once, cycles (libc6 <-> libgcc-s1) ended, the virtual debconf-2.0 left out.
    let all = names(closure_with(&["socat"], &[], lookup).unwrap());
    assert_eq!(
        all,
        ["socat", "libc6", "libgcc-s1", "libssl3", "libwrap0", "libnsl2"]
    );
    // Skipped packages, and what only they pull in, stay out.
    let some = names(closure_with(&["socat"], &["libwrap0"], lookup).unwrap());
    assert_eq!(some, ["socat", "libc6", "libgcc-s1", "libssl3"]);
}
