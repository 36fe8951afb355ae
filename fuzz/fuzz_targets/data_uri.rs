//! The `data:` URI decoder used for icon labels, and the icon path shape check.
//!
//! Properties: nothing panics; a value is left alone (`Ok(None)`) exactly when it is not a
//! `data:` URI; a decoded icon is PNG bytes that re-encode to a URI decoding to the same
//! bytes; any PNG payload encoded as a URI decodes back to itself; every path
//! `icon_path` produces passes `is_icon_path`, which accepts exactly the documented shape.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flagstate_core::icons::{decode_data_uri, icon_path, is_icon_path};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

const PREFIX: &str = "data:image/png;base64,";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

static ICON_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9a-f]{2}/[0-9a-f]{62}\.png$").expect("icon path shape"));

fuzz_target!(|data: &[u8]| {
    // Encoding direction: any payload behind the PNG signature survives the round trip.
    let png = [PNG_MAGIC, data].concat();
    let uri = format!("{PREFIX}{}", STANDARD.encode(&png));
    assert_eq!(decode_data_uri(&uri), Ok(Some(png.clone())));
    let path = icon_path(&png);
    assert!(is_icon_path(&path), "icon_path produced {path:?}");
    assert_eq!(path, icon_path(&png), "icon_path is not deterministic");

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Decoding direction.
    match decode_data_uri(text) {
        Ok(None) => assert!(
            !text.starts_with("data:"),
            "data: URI {text:?} passed through"
        ),
        Ok(Some(bytes)) => {
            assert!(text.starts_with(PREFIX));
            assert!(bytes.starts_with(PNG_MAGIC), "decoded icon is not a PNG");
            let again = format!("{PREFIX}{}", STANDARD.encode(&bytes));
            assert_eq!(decode_data_uri(&again), Ok(Some(bytes)));
        }
        Err(message) => {
            assert!(
                text.starts_with("data:"),
                "non-data: value {text:?} refused"
            );
            assert!(!message.is_empty());
        }
    }
    assert_eq!(
        is_icon_path(text),
        ICON_PATH.is_match(text),
        "is_icon_path({text:?})"
    );
});
