//! Flatpak's conventions for OCI images: the label keys Flatpak writes (and the
//! AppStream keys it borrows), and reading the AppStream metadata they carry.
//!
//! Flatpak publishes an application or runtime as an image whose config labels say what
//! it is: [`REF_LABEL`] (`app/<id>/<arch>/<branch>`), [`METADATA_LABEL`] (the metadata
//! keyfile), the sizes, the AppStream component ([`APPDATA_LABEL`], parsed by
//! [`AppStream`]) and `data:` URI icons ([`ICON_KEYS`]). Everything in flagstate that
//! names one of these keys names it through this module.

pub mod appstream;

pub use appstream::AppStream;

/// The Flatpak reference, `app/<id>/<arch>/<branch>` or `runtime/…`; its presence is
/// what makes an image a Flatpak.
pub const REF_LABEL: &str = "org.flatpak.ref";

/// The Flatpak metadata keyfile (`[Application]` / `[Runtime]` group, permissions).
pub const METADATA_LABEL: &str = "org.flatpak.metadata";

/// Bytes downloaded to install the Flatpak, as a decimal number.
pub const DOWNLOAD_SIZE_LABEL: &str = "org.flatpak.download-size";

/// Bytes the installed Flatpak occupies, as a decimal number.
pub const INSTALLED_SIZE_LABEL: &str = "org.flatpak.installed-size";

/// The AppStream XML describing the application (name, summary, developer).
pub const APPDATA_LABEL: &str = "org.freedesktop.appstream.appdata";

/// The 64×64 icon, a `data:image/png;base64,…` URI (or, once extracted, a URL).
pub const ICON_64_LABEL: &str = "org.freedesktop.appstream.icon-64";

/// The 128×128 icon, a `data:image/png;base64,…` URI (or, once extracted, a URL).
pub const ICON_128_LABEL: &str = "org.freedesktop.appstream.icon-128";

/// Icon label and annotation keys, smallest first.
pub const ICON_KEYS: [&str; 2] = [ICON_64_LABEL, ICON_128_LABEL];

/// Key prefixes of everything Flatpak (and the AppStream data it carries) puts into
/// labels and annotations; static indexes can drop keys starting with these.
pub const KEY_PREFIXES: &[&str] = &["org.flatpak.", "org.freedesktop."];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_flatpak_prefix() {
        let keys = [
            REF_LABEL,
            METADATA_LABEL,
            DOWNLOAD_SIZE_LABEL,
            INSTALLED_SIZE_LABEL,
            APPDATA_LABEL,
        ]
        .into_iter()
        .chain(ICON_KEYS);
        for key in keys {
            assert!(
                KEY_PREFIXES.iter().any(|p| key.starts_with(p)),
                "{key} has no Flatpak prefix"
            );
        }
    }
}
