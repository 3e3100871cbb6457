//! `adiff convert`: an official ADIFF checkpoint (or several files) -> one safetensors file with
//! exactly the tensors the model reads, plus the config JSON beside it.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device};

use super::ModelArgs;
use crate::model::adiff::Adiff;
use crate::model::checkpoint::save_safetensors;

/// Convert a checkpoint to safetensors.
///
/// The whole model is built from the input first, so a checkpoint with missing or mis-shaped
/// tensors is rejected (with their names) instead of converted. Buffers the model never reads
/// (GPT-2's causal masks, HTSAT's precomputed indices and masks, the unused HTSAT head) are
/// dropped; names stay the official ones, so the output loads wherever the input did. The config
/// is written next to the output as <output stem>.json.
///
/// With --dtype f16 or i8, the matmul weights of GPT-2, the mappers and the cross-projection are
/// written packed (`<name>.weight.f16`, or `<name>.weight.i8` + `.weight.i8_scale`; everything
/// else stays f32), so that `explain`/`infer` load them as they are: a smaller file, a faster
/// start and less memory. Such a file is for inference only (training needs the f32 one).
///
/// Examples:
///   adiff convert -c adiff_base.ckpt -o adiff_base.safetensors
///   adiff convert -c adiff_base.ckpt -o adiff_base.i8.safetensors --dtype i8
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output safetensors file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Write the matmul weights of GPT-2, the mappers and the cross-projection in this format:
    /// f16, or i8 (one f16 scale per 32 weights), packed for fast CPU inference, everything else
    /// f32. `explain`/`infer` load such a file as it is; training and `convert` refuse it.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: super::Dtype,
    /// Replace the output files (OUTPUT and its .json config) if they exist.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let cfg_path = args.output.with_extension("json");
    let mut inputs: Vec<&std::path::Path> =
        args.model.checkpoint.iter().map(PathBuf::as_path).collect();
    inputs.extend(args.model.config.as_deref());
    super::check_outputs(
        &inputs,
        &[("weights", &args.output), ("config", &cfg_path)],
        args.force,
    )?;
    anyhow::ensure!(
        args.dtype != super::Dtype::Bf16,
        "convert --dtype bf16 is not supported: bf16 is not a packed CPU format; GPUs load the f32 \
         file in bf16 themselves (`--dtype bf16` on explain, infer, embed, tag)"
    );
    let cfg = args.model.config()?;
    let ckpt = args.model.load_checkpoint(&cfg)?;
    anyhow::ensure!(
        !ckpt.is_packed(),
        "{}: holds packed (f16/i8) weights already; convert from the f32 checkpoint instead",
        ckpt.path().display()
    );
    let (vb, report) = ckpt.var_builder(DType::F32, &Device::Cpu);
    let model = Adiff::load(vb, &cfg)?;
    let names = report.used_names();
    report.finish()?;
    let mut tensors: HashMap<String, candle_core::Tensor> = names
        .iter()
        .filter_map(|n| ckpt.get(n).map(|t| (n.clone(), t.clone())))
        .collect();
    // A tied head (the official checkpoint stores lm_head and wte as one storage) is written once:
    // in f32 as wte (the loader ties lm_head to wte when it is absent); packed as the head alone,
    // whose rows then serve as the embedding table.
    let (head, wte) = (
        "caption_decoder.gpt.lm_head.weight",
        "caption_decoder.gpt.transformer.wte.weight",
    );
    let tied = match (tensors.get(head), tensors.get(wte)) {
        (Some(h), Some(w)) => {
            h.dims() == w.dims()
                && h.eq(w)?
                    .to_dtype(DType::F32)?
                    .mean_all()?
                    .to_scalar::<f32>()?
                    == 1.0
        }
        (None, Some(_)) => true,
        _ => false,
    };
    if tied {
        tensors.remove(head);
    }
    // Packed weights replace their f32 originals.
    let (packed, replaced) = model
        .with_weight_format(args.dtype.format())?
        .packed_tensors()?;
    for name in &replaced {
        tensors.remove(name);
    }
    if tied && !packed.is_empty() {
        tensors.remove(wte);
    }
    tensors.extend(packed);
    let metadata = HashMap::from([
        ("format".to_string(), "adiff".to_string()),
        (
            "weight_format".to_string(),
            args.dtype.format().name().to_string(),
        ),
    ]);
    save_safetensors(&tensors, Some(metadata), &args.output)?;
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg)? + "\n")?;
    let params: usize = tensors.values().map(|t| t.elem_count()).sum();
    eprintln!(
        "wrote {} tensors ({params} values) to {} and the config to {}",
        tensors.len(),
        args.output.display(),
        cfg_path.display()
    );
    Ok(())
}
