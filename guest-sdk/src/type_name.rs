//! The default names of message, event and object types: a Rust type's name without its
//! module path, so `my_crate::api::SetUsername` travels as `SetUsername`.

/// The short name of `T`: [`std::any::type_name`] with every module path stripped, including
/// those inside generic arguments, so `app::Page<app::User>` becomes `Page<User>`.
pub fn short_type_name<T: ?Sized>() -> String {
    strip_module_paths(std::any::type_name::<T>())
}

/// Strips the module path from every path in a type name, keeping generics, references,
/// tuples and arrays as they are.
pub fn strip_module_paths(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    for (i, c) in full.char_indices() {
        if c == ':' {
            // `a::b`: everything before the second colon is a module path.
            segment_start = i + 1;
        } else if !is_path_char(c) {
            out.push_str(&full[segment_start..i]);
            out.push(c);
            segment_start = i + c.len_utf8();
        }
    }
    out.push_str(&full[segment_start..]);
    out
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    mod api {
        pub struct SetUsername;
        pub struct Page<T>(#[allow(dead_code)] pub T);
    }

    #[test]
    fn strips_the_module_path_of_a_plain_type() {
        assert_eq!(short_type_name::<api::SetUsername>(), "SetUsername");
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<u32>(), "u32");
    }

    #[test]
    fn strips_module_paths_inside_generic_arguments() {
        assert_eq!(
            short_type_name::<api::Page<api::SetUsername>>(),
            "Page<SetUsername>"
        );
        assert_eq!(
            short_type_name::<std::collections::HashMap<String, Vec<api::SetUsername>>>(),
            "HashMap<String, Vec<SetUsername>>"
        );
    }

    #[test]
    fn keeps_references_tuples_and_arrays() {
        assert_eq!(short_type_name::<&str>(), "&str");
        assert_eq!(
            short_type_name::<(api::SetUsername, u8)>(),
            "(SetUsername, u8)"
        );
        assert_eq!(
            short_type_name::<[api::SetUsername; 2]>(),
            "[SetUsername; 2]"
        );
        assert_eq!(
            strip_module_paths("dyn a::b::Trait + Send"),
            "dyn Trait + Send"
        );
    }
}
