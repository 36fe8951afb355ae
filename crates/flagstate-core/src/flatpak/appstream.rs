//! Reading the AppStream metadata Flatpak images carry in the
//! `org.freedesktop.appstream.appdata` label ([`APPDATA_LABEL`](super::APPDATA_LABEL)).

use roxmltree::{Document, Node};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// What flagstate shows of an AppStream component: untranslated texts only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppStream {
    /// `<id>`, e.g. `org.gnome.Calculator`.
    pub id: Option<String>,
    /// `<name>`, the human name.
    pub name: Option<String>,
    /// `<summary>`, one line.
    pub summary: Option<String>,
    /// `<developer_name>` or `<developer><name>`.
    pub developer: Option<String>,
}

impl AppStream {
    /// Parses the first `<component>` of an AppStream document (a bare `<component>` or
    /// one inside `<components>`). Returns `None` for text that is not XML or has no
    /// component; DTDs are refused, so entity expansion cannot blow up.
    pub fn parse(xml: &str) -> Option<Self> {
        let doc = Document::parse(xml).ok()?;
        let component = doc
            .descendants()
            .find(|n| n.is_element() && n.tag_name().name() == "component")?;
        let developer = untranslated_child(component, "developer_name").or_else(|| {
            component
                .children()
                .find(|n| n.is_element() && n.tag_name().name() == "developer")
                .and_then(|d| untranslated_child(d, "name"))
        });
        Some(AppStream {
            id: untranslated_child(component, "id"),
            name: untranslated_child(component, "name"),
            summary: untranslated_child(component, "summary"),
            developer,
        })
    }
}

/// Text of the first child element `name` without `xml:lang`, whitespace collapsed.
fn untranslated_child(parent: Node<'_, '_>, name: &str) -> Option<String> {
    parent
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == name)
        .find(|n| n.attribute((XML_NS, "lang")).is_none())
        .map(|n| {
            let text: String = n
                .descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect();
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_untranslated_name_and_summary() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<components version="0.8"><component type="desktop-application">
  <id>org.example.Viewer</id>
  <name xml:lang="de">Betrachter</name>
  <name>Viewer &amp; Co</name>
  <summary>Look at   things
  quickly</summary>
  <developer_name>Example &lt;Team&gt;</developer_name>
</component></components>"#;
        let app = AppStream::parse(xml).unwrap();
        assert_eq!(app.id.as_deref(), Some("org.example.Viewer"));
        assert_eq!(app.name.as_deref(), Some("Viewer & Co"));
        assert_eq!(app.summary.as_deref(), Some("Look at things quickly"));
        assert_eq!(app.developer.as_deref(), Some("Example <Team>"));
    }

    #[test]
    fn bare_component_and_nested_developer() {
        let xml =
            "<component><name>Ünïcødé ✓</name><developer><name>Dev</name></developer></component>";
        let app = AppStream::parse(xml).unwrap();
        assert_eq!(app.name.as_deref(), Some("Ünïcødé ✓"));
        assert_eq!(app.summary, None);
        assert_eq!(app.developer.as_deref(), Some("Dev"));
    }

    #[test]
    fn declaration_and_bare_component() {
        let xml = r#"<?xml version="1.0"?><component type="desktop-application"><id>a.b</id><name xml:lang="fr">F</name><name>N &amp; M</name><summary>S</summary></component>"#;
        let app = AppStream::parse(xml).unwrap();
        assert_eq!(app.name.as_deref(), Some("N & M"));
        assert_eq!(app.summary.as_deref(), Some("S"));
    }

    #[test]
    fn rejects_garbage_and_dtds() {
        assert_eq!(AppStream::parse("not xml"), None);
        assert_eq!(AppStream::parse("<other/>"), None);
        let bomb = r#"<!DOCTYPE c [<!ENTITY a "aaaa">]><component><name>&a;</name></component>"#;
        assert_eq!(AppStream::parse(bomb), None);
    }
}
