//! Flatpak-style images: the labels `flatpak build-bundle --oci` writes, with a valid
//! metadata keyfile, a valid AppStream component and a real PNG icon.

use std::io::Write;

use base64::Engine;
use flagstate_core::testkit::ImageSpec;
use flate2::Compression;
use flate2::write::ZlibEncoder;

/// An application to push.
#[derive(Debug, Clone)]
pub struct App {
    /// Application id, e.g. `org.example.Hello`.
    pub id: &'static str,
    /// AppStream name.
    pub name: &'static str,
    /// AppStream summary.
    pub summary: &'static str,
    /// Version written into the AppStream release (changes the digest between pushes).
    pub version: &'static str,
}

impl App {
    /// The Flatpak ref the image carries.
    pub fn flatpak_ref(&self) -> String {
        format!("app/{}/x86_64/stable", self.id)
    }

    /// Repository name, e.g. `apps/org.example.hello` (repository names are lowercase).
    pub fn repository(&self) -> String {
        format!("apps/{}", self.id.to_ascii_lowercase())
    }

    /// The image: linux/amd64 with the Flatpak labels.
    pub fn image(&self) -> ImageSpec {
        let metadata = format!(
            "[Application]\nname={}\nruntime=org.freedesktop.Platform/x86_64/23.08\nsdk=org.freedesktop.Sdk/x86_64/23.08\ncommand=hello\n",
            self.id
        );
        ImageSpec::new("linux", "amd64")
            .label("org.flatpak.ref", &self.flatpak_ref())
            .label("org.flatpak.metadata", &metadata)
            .label("org.flatpak.download-size", "1048576")
            .label("org.flatpak.installed-size", "4194304")
            .label("org.freedesktop.appstream.appdata", &self.appdata())
            .label("org.freedesktop.appstream.icon-64", &icon_data_uri(64))
    }

    /// The AppStream catalog entry (a `<components>` document with one component), the
    /// form `flatpak build-bundle --oci` stores.
    pub fn appdata(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<components version="0.14" origin="flatpak">
  <component type="desktop-application">
    <id>{id}</id>
    <name>{name}</name>
    <summary>{summary}</summary>
    <description><p>{name} is a small application used to test registry indexes.</p></description>
    <metadata_license>CC0-1.0</metadata_license>
    <project_license>MIT</project_license>
    <launchable type="desktop-id">{id}.desktop</launchable>
    <icon type="cached" width="64" height="64">{id}.png</icon>
    <bundle type="flatpak" runtime="org.freedesktop.Platform/x86_64/23.08" sdk="org.freedesktop.Sdk/x86_64/23.08">{bundle}</bundle>
    <releases><release version="{version}" timestamp="1704067200"/></releases>
    <content_rating type="oars-1.1"/>
  </component>
</components>
"#,
            id = self.id,
            name = self.name,
            summary = self.summary,
            version = self.version,
            bundle = self.flatpak_ref(),
        )
    }
}

/// `data:image/png;base64,…` of a real `size`×`size` PNG.
pub fn icon_data_uri(size: u32) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png(size))
    )
}

/// A valid RGBA PNG: a diagonal gradient. Written by hand (signature, IHDR, IDAT, IEND)
/// because the tests need only this one picture and flate2 already does the compression.
pub fn png(size: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((size * 4 + 1) * size) as usize);
    for y in 0..size {
        raw.push(0); // filter: none
        for x in 0..size {
            let v = ((x + y) * 255 / (2 * size.max(1))) as u8;
            raw.extend_from_slice(&[v, 128, 255 - v, 255]);
        }
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&raw).expect("compress");
    let idat = z.finish().expect("compress");

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, no filter, no interlace

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(&data);
        out.extend_from_slice(kind);
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

/// The test applications.
pub const HELLO: App = App {
    id: "org.example.Hello",
    name: "Hello",
    summary: "Greets the world politely",
    version: "1.0",
};

/// A second application, pushed while the server runs.
pub const WORLD: App = App {
    id: "org.example.World",
    name: "World Atlas",
    summary: "Maps of every country",
    version: "2.0",
};

/// `spec` with a layer real clients can unpack: an uncompressed tar holding `/README`
/// with `text`. (`podman pull` detects compression from the bytes, so the testkit's
/// `tar+gzip` media type does not stop it, and the config's diff ID, the digest of the
/// layer, is then also the digest of its uncompressed content as it must be.)
pub fn pullable(mut spec: ImageSpec, text: &str) -> ImageSpec {
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_704_067_200);
    let mut archive = tar::Builder::new(Vec::new());
    archive
        .append_data(&mut header, "README", text.as_bytes())
        .expect("tar into memory");
    spec.layer = archive.into_inner().expect("tar into memory");
    spec
}

/// The sample applications of the development environment (`scripts/dev-env`,
/// `examples/populate.rs apps`).
pub const SAMPLE_APPS: &[App] = &[
    HELLO,
    WORLD,
    App {
        id: "org.example.Notes",
        name: "Notes",
        summary: "Writes down what you must not forget",
        version: "3.2",
    },
    App {
        id: "org.example.Calculator",
        name: "Calculator",
        summary: "Adds, subtracts and keeps a tape",
        version: "1.4",
    },
    App {
        id: "org.example.Weather",
        name: "Weather",
        summary: "Forecasts for the places you care about",
        version: "0.9",
    },
    App {
        id: "org.example.Chess",
        name: "Chess",
        summary: "Plays a patient game against you",
        version: "5.0",
    },
];
