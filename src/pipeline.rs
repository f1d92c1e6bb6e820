//! WGSL sources, their specialisation per storage dtype, and the pipeline cache.
//!
//! Each shader in `shaders/` declares its element arrays as `array<ST>` (read) or `array<OT>`
//! (written) and reads and writes them only through `ld_NAME(i) -> f32` and `st_NAME(i, f32)`.
//! This module prepends the dtype prelude and generates those accessors, so one WGSL file serves
//! f32, native f16 (SHADER_F16) and f16 packed two to a `u32` word (adapters without f16).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Context, DType, Error, Result};

/// How element arrays are stored in a shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Storage {
    F32,
    /// `enable f16;` arrays of `f16`.
    F16,
    /// f16 pairs in `u32` words; outputs are written as f32 and packed afterwards.
    F16Packed,
}

impl Storage {
    pub(crate) fn for_dtype(ctx: &Context, d: DType) -> Self {
        match d {
            DType::F32 => Storage::F32,
            DType::F16 if ctx.shader_f16() => Storage::F16,
            DType::F16 => Storage::F16Packed,
        }
    }
}

/// The layout of a uniform struct: its size and each member's byte offset.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the reflection tests
pub(crate) struct Layout {
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

/// A `#[repr(C)]` struct bound as a shader's `Params` uniform (declared with `uniform!`).
pub(crate) trait Uniform: bytemuck::Pod {
    fn layout() -> Layout;
}

/// One WGSL shader: its source, its compute entry points and the Rust side of its `Params`.
#[cfg_attr(not(test), allow(dead_code))] // entries and params are read by the reflection tests
pub(crate) struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
    pub params: fn() -> Layout,
}

macro_rules! kernel {
    ($name:literal, [$($e:literal),*], $params:ty) => {
        Kernel {
            name: $name,
            source: include_str!(concat!("../shaders/", $name, ".wgsl")),
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
            "chunk_apply"
        ],
        crate::attention::chunk::Params
    ),
    kernel!(
        "transnormer",
        ["norm_rows"],
        crate::attention::transnormer::NormParams
    ),
    kernel!(
        "favor",
        [
            "favor_logits",
            "head_max",
            "favor_exp_row",
            "favor_exp_head",
            "map_features",
            "cast_f32"
        ],
        crate::attention::favor::Params
    ),
    kernel!(
        "recurrent",
        ["step_update", "step_output"],
        crate::attention::recurrent::Params
    ),
    kernel!("cast", ["pack_f16"], crate::cast::PackParams),
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
            "store_complex"
        ],
        crate::ssm::fft::Params
    ),
    kernel!(
        "scan",
        [
            "load_ab",
            "scan_up",
            "scan_down",
            "store_real",
            "store_complex",
            "load_ssm",
            "out_ssm",
            "step"
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
        "ssm_kernel",
        ["discretize", "vandermonde"],
        crate::ssm::kernel::Params
    ),
];

fn source(shader: &str) -> Option<&'static str> {
    KERNELS.iter().find(|k| k.name == shader).map(|k| k.source)
}

/// Helpers every shader may call, prepended when the shader calls one and does not define it.
/// `(name, needs, code)`: `needs` is an override the helper reads, which the shader must declare.
const PRELUDE: &[(&str, Option<&str>, &str)] = &[
    (
        "wg_index",
        None,
        "// Linear workgroup index of a folded grid (see schedule::fold_grid).
fn wg_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + nwg.x * (wg.y + nwg.y * wg.z);
}",
    ),
    (
        "gid",
        Some("WG"),
        "// Linear invocation index of a folded grid of WG-wide workgroups.
fn gid(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
}",
    ),
    (
        "cmul",
        None,
        "fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}",
    ),
    (
        "fmax",
        None,
        "// max that keeps NaN out of neither argument's way: b when b > a, else a.
fn fmax(a: f32, b: f32) -> f32 {
    return select(a, b, b > a);
}",
    ),
    (
        "phi",
        Some("FMAP"),
        "// The feature map FMAP (codes from FeatureMap::shader_id) of one element.
fn phi(x: f32) -> f32 {
    if (FMAP == FMAP_ELU1) {
        return select(exp(x), x + 1.0, x > 0.0);
    }
    if (FMAP == FMAP_RELU) {
        return select(x, 0.0, x < 0.0);
    }
    if (FMAP == FMAP_ELU) {
        return select(exp(x) - 1.0, x, x > 0.0);
    }
    return x;
}",
    ),
];

/// The prelude for `src`: the feature-map codes, then each helper it calls but does not define.
fn prelude(src: &str) -> String {
    use crate::attention::FeatureMap;
    let mut out = String::new();
    for (name, fm) in [
        ("ELU1", FeatureMap::Elu1),
        ("RELU", FeatureMap::Relu),
        ("IDENTITY", FeatureMap::Identity),
        ("ELU", FeatureMap::Elu),
    ] {
        out += &format!("const FMAP_{name}: u32 = {}u;\n", fm.shader_id());
    }
    for (name, needs, code) in PRELUDE {
        let called = src.contains(&format!("{name}("));
        let defined = src.contains(&format!("fn {name}("));
        let has_need = needs.is_none_or(|o| src.contains(&format!("override {o}")));
        if called && !defined && has_need {
            out += code;
            out.push('\n');
        }
    }
    out
}

/// The prelude plus accessors for every `array<ST>` / `array<OT>` binding in `src`.
pub(crate) fn specialise(src: &str, storage: Storage) -> String {
    let (st, ot, head) = match storage {
        Storage::F32 => ("f32", "f32", ""),
        Storage::F16 => ("f16", "f16", "enable f16;\n"),
        Storage::F16Packed => ("u32", "f32", ""),
    };
    let mut out = format!("{head}alias ST = {st};\nalias OT = {ot};\n{}", prelude(src));
    for line in src.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("@group(0)") else {
            continue;
        };
        let Some(name_start) = rest.find('>') else {
            continue;
        };
        let decl = &rest[name_start + 1..];
        let Some((name, ty)) = decl.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let ty = ty.trim().trim_end_matches(';').trim();
        if ty == "array<ST>" {
            let body = match storage {
                Storage::F16Packed => format!("return unpack2x16float({name}[i >> 1u])[i & 1u];"),
                _ => format!("return f32({name}[i]);"),
            };
            out += &format!("fn ld_{name}(i: u32) -> f32 {{ {body} }}\n");
        } else if ty == "array<OT>" {
            out += &format!("fn st_{name}(i: u32, x: f32) {{ {name}[i] = OT(x); }}\n");
        }
    }
    out + src
}

/// Splits `constants` into those `src` declares as `const NAME: u32 = ..;` (compile-time sizes
/// such as register tiles, which size function-scope arrays where overrides may not), substituted
/// into the source, and the pipeline overrides.
fn substitute_consts(
    src: &str,
    constants: &[(&'static str, u32)],
) -> (String, Vec<(&'static str, u32)>) {
    let mut code = src.to_string();
    let mut overrides = Vec::new();
    for &(name, v) in constants {
        let decl = format!("const {name}: u32 = ");
        match code.find(&decl) {
            Some(at) => {
                let end = at + code[at..].find(';').expect("const declaration ends with ;");
                code.replace_range(at..end, &format!("{decl}{v}u"));
            }
            None => overrides.push((name, v)),
        }
    }
    (code, overrides)
}

/// Builds one compute pipeline inside a validation error scope.
fn compile(
    ctx: &Context,
    shader: &str,
    entry: &str,
    code: String,
    constants: &[(&'static str, u32)],
) -> Result<wgpu::ComputePipeline> {
    let consts: Vec<(&str, f64)> = constants.iter().map(|&(n, v)| (n, v as f64)).collect();
    let dev = &ctx.device;
    let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(shader),
        source: wgpu::ShaderSource::Wgsl(code.into()),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &consts,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    // On the web nothing may block: a shader error reaches the browser console instead.
    #[cfg(target_arch = "wasm32")]
    let popped: Option<wgpu::Error> = {
        drop(scope.pop());
        None
    };
    #[cfg(not(target_arch = "wasm32"))]
    let popped = pollster::block_on(scope.pop());
    match popped {
        Some(err) => Err(Error::Shader {
            shader: shader.into(),
            entry: entry.into(),
            message: err.to_string(),
        }),
        None => Ok(pipeline),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    shader: &'static str,
    entry: &'static str,
    storage: Storage,
    constants: Vec<(&'static str, u32)>,
}

/// Compiled pipelines, one per (shader, entry point, storage, override constants).
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// The pipeline for this key, compiled on first use inside a validation error scope so a bad
    /// shader is an [`Error::Shader`] naming it. `LONGSEQ_DUMP_WGSL=DIR` writes each specialised
    /// source to DIR for debugging.
    pub(crate) fn get(
        &self,
        ctx: &Context,
        shader: &'static str,
        entry: &'static str,
        storage: Storage,
        constants: &[(&'static str, u32)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = Key {
            shader,
            entry,
            storage,
            constants: constants.to_vec(),
        };
        if let Some(p) = self.map.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let src = source(shader).ok_or_else(|| Error::Shader {
            shader: shader.into(),
            entry: entry.into(),
            message: "no such shader".into(),
        })?;
        let (code, overrides) = substitute_consts(src, constants);
        let code = specialise(&code, storage);
        if let Ok(dir) = std::env::var("LONGSEQ_DUMP_WGSL") {
            let _ = std::fs::write(format!("{dir}/{shader}.{storage:?}.wgsl"), &code);
        }
        let pipeline = compile(ctx, shader, entry, code, &overrides)?;
        let p = Arc::new(pipeline);
        self.map.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }
}

#[cfg(test)]
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
        let code = specialise(source, Storage::F32);
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
            let (members, span, module) = params_of(k.name, k.source);
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
                let code = specialise(k.source, storage);
                if let Err(e) = naga::front::wgsl::parse_str(&code) {
                    panic!("{} ({storage:?}): {}", k.name, e.emit_to_string(&code));
                }
            }
        }
    }

    #[test]
    fn a_reordered_field_on_either_side_fails() {
        let k = &KERNELS[0];
        let (members, span, _) = params_of(k.name, k.source);
        let rust = (k.params)();
        assert!(compare(&members, span, &rust).is_ok());
        // Rust side: swap the offsets of the first two fields.
        let mut swapped = (k.params)();
        let (a, b) = (swapped.fields[0].1, swapped.fields[1].1);
        (swapped.fields[0].1, swapped.fields[1].1) = (b, a);
        assert!(compare(&members, span, &swapped).is_err());
        // WGSL side: the same two members in the other order.
        let src = k.source.replacen(
            "    rows: u32,\n    len: u32,",
            "    len: u32,\n    rows: u32,",
            1,
        );
        assert_ne!(
            src, k.source,
            "the test needs `rows, len` at the start of {}",
            k.name
        );
        let (members, span, _) = params_of(k.name, &src);
        assert!(compare(&members, span, &rust).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn const_sizes_are_substituted_and_the_rest_are_overrides() {
        let src = "const TR: u32 = 16u;\nconst TRX: u32 = 3u;\noverride WG: u32 = 64u;\n";
        let (code, over) = substitute_consts(src, &[("TR", 4), ("WG", 32)]);
        assert_eq!(
            code,
            "const TR: u32 = 4u;\nconst TRX: u32 = 3u;\noverride WG: u32 = 64u;\n"
        );
        assert_eq!(over, vec![("WG", 32)]);
    }

    #[test]
    fn accessors_follow_the_storage_mode() {
        let src = "@group(0) @binding(1) var<storage, read> x: array<ST>;\n\
                   @group(0) @binding(2) var<storage, read_write> y: array<OT>;\n";
        let packed = specialise(src, Storage::F16Packed);
        assert!(packed
            .contains("fn ld_x(i: u32) -> f32 { return unpack2x16float(x[i >> 1u])[i & 1u]; }"));
        assert!(packed.contains("alias OT = f32;"));
        let native = specialise(src, Storage::F16);
        assert!(native.starts_with("enable f16;"));
        assert!(native.contains("fn st_y(i: u32, x: f32) { y[i] = OT(x); }"));
    }

    #[test]
    fn a_shader_that_fails_to_compile_is_an_error_naming_it() {
        let ctx = match Context::new() {
            Ok(c) => c,
            Err(e) => panic!("needs an adapter (apt-get install mesa-vulkan-drivers): {e}"),
        };
        let bad = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }".to_string();
        match compile(&ctx, "broken_shader", "main", bad, &[]) {
            Err(Error::Shader {
                shader,
                entry,
                message,
            }) => {
                assert_eq!((shader.as_str(), entry.as_str()), ("broken_shader", "main"));
                assert!(!message.is_empty());
            }
            other => panic!("expected Error::Shader, got {:?}", other.err()),
        }
        let missing = ctx
            .pipelines
            .get(&ctx, "no_such_shader", "main", Storage::F32, &[]);
        assert!(matches!(missing, Err(Error::Shader { .. })));
    }
}
