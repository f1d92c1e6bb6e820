//! The kernel registry: every shader with its compute entry points and the Rust side of its
//! `Params` uniform, in one table. Tests reflect each shader with naga (wgpu's own front end) and
//! check its `Params` size and member offsets against the Rust struct, and that every entry point
//! exists. Test-only and above the ops: it names their `Params` types, and no module imports it.

use crate::pipeline::{source, specialise, Layout, Storage, Uniform};

/// One WGSL shader: its name (file under `shaders/`), its compute entry points and its `Params`.
pub(crate) struct Kernel {
    pub name: &'static str,
    pub entries: &'static [&'static str],
    pub params: fn() -> Layout,
}

impl Kernel {
    fn source(&self) -> &'static str {
        source(self.name).unwrap_or_else(|| panic!("{}: not in pipeline::source", self.name))
    }
}

macro_rules! kernel {
    ($name:literal, [$($e:literal),*], $params:ty) => {
        Kernel {
            name: $name,
            entries: &[$($e),*],
            params: <$params as Uniform>::layout,
        }
    };
}

/// Every shader the crate runs.
pub(crate) const KERNELS: &[Kernel] = &[
    kernel!(
        "softmax_attention",
        ["attend", "attend_reg"],
        crate::attention::softmax::Params
    ),
    kernel!(
        "chunk_attention",
        [
            "prep_qk",
            "prep_v",
            "chunk_state",
            "scan",
            "totals",
            "load_state",
            "chunk_apply"
        ],
        crate::attention::chunk::Params
    ),
    kernel!(
        "lightning_fix",
        ["detect", "terms", "write_back"],
        crate::attention::lightning_fix::Params
    ),
    kernel!(
        "transnormer",
        ["norm_rows", "norm_rows_wide"],
        crate::attention::transnormer::NormParams
    ),
    kernel!(
        "favor",
        [
            "favor_proj",
            "favor_logits",
            "head_max",
            "favor_exp_row",
            "favor_exp_head",
            "key_chunk_max",
            "key_max_scan",
            "key_max_fill",
            "key_running_max",
            "favor_exp_keys",
            "query_max",
            "favor_exp_query",
            "map_features",
            "cast_f32",
            "extend_v",
            "favor_intra_w",
            "favor_intra",
            "trig_fill_max",
            "trig_exp_keys",
            "trig_exp_query",
            "trig_intra_w"
        ],
        crate::attention::favor::Params
    ),
    kernel!(
        "favor_batch",
        [
            "seq_gather",
            "seq_store",
            "fold_max",
            "favor_initial",
            "favor_final"
        ],
        crate::attention::favor_batch::Params
    ),
    kernel!(
        "recurrent",
        ["step_update", "step_output"],
        crate::attention::recurrent::Params
    ),
    kernel!("cast", ["pack_f16", "unpack_f16"], crate::cast::PackParams),
    kernel!("embedding", ["lookup"], crate::positions::embedding::Params),
    kernel!("rope", ["rotate"], crate::positions::rope::Params),
    kernel!("hippo", ["legs", "lti"], crate::ssm::approx::Params),
    kernel!("dplr", ["cauchy", "store_real"], crate::ssm::dplr::Params),
    kernel!(
        "fft",
        [
            "load_real",
            "load_complex",
            "stockham",
            "pointwise",
            "store_conv",
            "store_complex",
            "detect_nf"
        ],
        crate::ssm::fft::Params
    ),
    kernel!(
        "fft_conv",
        ["col_fwd", "row_kspec", "row_conv", "col_inv"],
        crate::ssm::conv::Params
    ),
    kernel!(
        "scan",
        [
            "load_ab",
            "chunk_up",
            "chunk_down",
            "store_real",
            "store_complex",
            "load_ssm",
            "out_ssm",
            "step",
            "save_carry",
            "save_state"
        ],
        crate::ssm::scan::Params
    ),
    kernel!(
        "selective_scan",
        [
            "prep",
            "chunk_state",
            "carry_up",
            "carry_down",
            "chunk_apply",
            "finish"
        ],
        crate::ssm::selective::Params
    ),
    kernel!(
        "gla",
        [
            "seg_sums",
            "chunk_state",
            "chunk_in",
            "chunk_out",
            "final_state"
        ],
        crate::attention::gla::Params
    ),
    kernel!(
        "s4d_batch",
        ["gather", "widen", "finish", "final_state"],
        crate::ssm::conv_batch::Params
    ),
    kernel!(
        "ssm_kernel",
        ["discretize", "vandermonde"],
        crate::ssm::kernel::Params
    ),
];

mod reflection {
    //! Reflects every shader with naga (wgpu's own front end) and checks the Rust side of its
    //! `Params` uniform: size and the offset of every named member.
    use super::*;

    fn is_pad(name: &str) -> bool {
        name.starts_with('_') || name.starts_with("pad")
    }

    /// `Err` naming the first difference between a WGSL struct (members, span) and `rust`.
    fn compare(
        wgsl: &[(String, u32)],
        span: u32,
        rust: &Layout,
    ) -> std::result::Result<(), String> {
        let rust_fields: Vec<(&str, u32)> = rust
            .fields
            .iter()
            .map(|&(n, o)| (n, o as u32))
            .filter(|(n, _)| !is_pad(n))
            .collect();
        let wgsl_fields: Vec<(&str, u32)> = wgsl
            .iter()
            .map(|(n, o)| (n.as_str(), *o))
            .filter(|(n, _)| !is_pad(n))
            .collect();
        if rust_fields != wgsl_fields {
            return Err(format!(
                "members differ:\n  rust {rust_fields:?}\n  wgsl {wgsl_fields:?}"
            ));
        }
        let size = rust.size as u32;
        if size < span || size > span.next_multiple_of(16) {
            return Err(format!("rust size {size}, wgsl span {span}"));
        }
        Ok(())
    }

    /// The members and span of `source`'s uniform at group 0, binding 0.
    fn params_of(name: &str, source: &str) -> (Vec<(String, u32)>, u32, naga::Module) {
        let code = specialise(&crate::unroll::expand(source).unwrap(), Storage::F32);
        let module = naga::front::wgsl::parse_str(&code)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&code)));
        let (_, var) = module
            .global_variables
            .iter()
            .find(|(_, v)| {
                v.space == naga::AddressSpace::Uniform
                    && v.binding
                        == Some(naga::ResourceBinding {
                            group: 0,
                            binding: 0,
                        })
            })
            .unwrap_or_else(|| panic!("{name}: no uniform at group 0, binding 0"));
        let naga::TypeInner::Struct { members, span } = &module.types[var.ty].inner else {
            panic!("{name}: the uniform is not a struct");
        };
        let members = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
            .collect();
        (members, *span, module)
    }

    #[test]
    fn every_shader_is_registered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "wgsl").then(|| p.file_stem().unwrap().to_string_lossy().into())
            })
            .collect();
        on_disk.sort();
        let mut registered: Vec<String> = KERNELS.iter().map(|k| k.name.to_string()).collect();
        registered.sort();
        assert_eq!(on_disk, registered);
    }

    #[test]
    fn every_params_struct_matches_its_shader_and_every_entry_exists() {
        for k in KERNELS {
            let (members, span, module) = params_of(k.name, k.source());
            if let Err(e) = compare(&members, span, &(k.params)()) {
                panic!("{}: Params {e}", k.name);
            }
            for e in k.entries {
                assert!(
                    module
                        .entry_points
                        .iter()
                        .any(|ep| ep.name == *e && ep.stage == naga::ShaderStage::Compute),
                    "{}: no compute entry `{e}`",
                    k.name
                );
            }
        }
    }

    #[test]
    fn every_storage_mode_parses() {
        for k in KERNELS {
            for storage in [Storage::F32, Storage::F16, Storage::F16Packed] {
                let code = specialise(&crate::unroll::expand(k.source()).unwrap(), storage);
                if let Err(e) = naga::front::wgsl::parse_str(&code) {
                    panic!("{} ({storage:?}): {}", k.name, e.emit_to_string(&code));
                }
            }
        }
    }

    #[test]
    fn a_reordered_field_on_either_side_fails() {
        let k = &KERNELS[0];
        let (members, span, _) = params_of(k.name, k.source());
        let rust = (k.params)();
        assert!(compare(&members, span, &rust).is_ok());
        // Rust side: swap the offsets of the first two fields.
        let mut swapped = (k.params)();
        let (a, b) = (swapped.fields[0].1, swapped.fields[1].1);
        (swapped.fields[0].1, swapped.fields[1].1) = (b, a);
        assert!(compare(&members, span, &swapped).is_err());
        // WGSL side: the same two members in the other order.
        let src = k.source().replacen(
            "    rows: u32,\n    len: u32,",
            "    len: u32,\n    rows: u32,",
            1,
        );
        assert_ne!(
            src,
            k.source(),
            "the test needs `rows, len` at the start of {}",
            k.name
        );
        let (members, span, _) = params_of(k.name, &src);
        assert!(compare(&members, span, &rust).is_err());
    }
}
