//! The audio side of ADIFF up to HTSAT's outputs: log-mel front end + HTSAT, loaded from the
//! checkpoint's `audio_encoder.base.htsat.*` tensors.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::audio::mel::LogMelFrontEnd;
use crate::error::{AdiffError, Result};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::AdiffConfig;
use crate::model::htsat::{Htsat, HtsatOutput};

/// Checkpoint prefix of HTSAT's tensors.
pub const HTSAT_PREFIX: &str = "audio_encoder.base.htsat";
/// Largest difference tolerated between the checkpoint's STFT kernels and the periodic-Hann DFT
/// this front end computes (the kernels are stored in f32).
const STFT_KERNEL_TOLERANCE: f32 = 1e-4;

/// Log-mel front end and HTSAT, ready to encode batches of fixed-length clips.
pub struct AudioEncoder {
    pub front_end: LogMelFrontEnd,
    pub htsat: Htsat,
    device: Device,
}

impl AudioEncoder {
    /// Builds the encoder from a checkpoint, failing with every missing or mis-shaped tensor named.
    pub fn from_checkpoint(ckpt: &Checkpoint, cfg: &AdiffConfig, device: &Device) -> Result<Self> {
        Self::from_checkpoint_as(ckpt, cfg, device, DType::F32)
    }

    /// [`AudioEncoder::from_checkpoint`] with HTSAT's weights and activations in `dtype`
    /// (bf16/f16 on a GPU); the front end and the outputs stay f32.
    pub fn from_checkpoint_as(
        ckpt: &Checkpoint,
        cfg: &AdiffConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let (vb, report) = ckpt.var_builder(dtype, device);
        let encoder =
            Self::load(vb, cfg).map_err(|e| AdiffError::checkpoint(ckpt.path(), e.to_string()))?;
        report.finish()?;
        Ok(encoder)
    }

    /// Builds the encoder from `vb` (the checkpoint root). Uses the checkpoint's mel matrix when it
    /// has one, and checks that its STFT kernels (when present) are the DFT the front end computes.
    pub fn load(vb: VarBuilder, cfg: &AdiffConfig) -> Result<Self> {
        let device = vb.device().clone();
        let htsat = Htsat::new(&cfg.htsat, &cfg.audio, vb.pp(HTSAT_PREFIX))?;
        let (bins, n_fft, mels) = (cfg.audio.num_bins(), cfg.audio.n_fft, cfg.audio.n_mels);
        let hv = vb.pp(HTSAT_PREFIX);
        let mel_name = "logmel_extractor.melW";
        let front_end = if hv.contains_tensor(mel_name) {
            // The front end is f32 whatever the model's dtype.
            let mel =
                hv.get_with_hints_dtype((bins, mels), mel_name, Default::default(), DType::F32)?;
            LogMelFrontEnd::with_mel_matrix(&cfg.audio, &mel)?
        } else {
            LogMelFrontEnd::new(&cfg.audio)
        };
        let stft = hv.pp("spectrogram_extractor.stft");
        if stft.contains_tensor("conv_real.weight") && stft.contains_tensor("conv_imag.weight") {
            let kernel = |name| {
                stft.get_with_hints_dtype((bins, 1, n_fft), name, Default::default(), DType::F32)
            };
            let (re, im) = (kernel("conv_real.weight")?, kernel("conv_imag.weight")?);
            let err = front_end.stft_kernel_error(&re, &im)?;
            if err > STFT_KERNEL_TOLERANCE {
                return Err(AdiffError::Invalid(format!(
                    "{HTSAT_PREFIX}.spectrogram_extractor.stft.conv_real/conv_imag differ from a \
                     periodic-Hann DFT of size {n_fft} by {err:.2e}; this front end cannot reproduce them"
                )));
            }
        }
        Ok(Self {
            front_end,
            htsat,
            device,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `[B, frames, n_mels]` log-mel of equal-length clips.
    pub fn log_mel(&self, clips: &[Vec<f32>]) -> Result<Tensor> {
        self.front_end.log_mel_batch(clips, &self.device)
    }

    /// Clips -> (log-mel `[B, T, M]`, HTSAT outputs).
    /// HTSAT's re-packable linears with their checkpoint names.
    pub(crate) fn visit(&mut self, f: &mut crate::model::packed::Visitor) -> Result<()> {
        self.htsat.visit(HTSAT_PREFIX, f)
    }

    pub fn encode(&self, clips: &[Vec<f32>]) -> Result<(Tensor, HtsatOutput)> {
        // On a rayon worker, like decoding: see `ops::on_pool`.
        crate::model::ops::on_pool(|| {
            let logmel = self.log_mel(clips)?;
            let out = self.encode_log_mel(&logmel)?;
            Ok((logmel, out))
        })
    }

    /// HTSAT on log-mel spectrograms `[B, frames, n_mels]` computed by [`Self::front_end`]
    /// elsewhere (`adiff serve` computes them while the model runs other requests).
    pub fn encode_log_mel(&self, logmel: &Tensor) -> Result<HtsatOutput> {
        let out = crate::model::ops::on_pool(|| self.htsat.forward(logmel))?;
        // NaN weights (or a log-mel that overflowed) would otherwise flow on into NaN event
        // probabilities and an explanation of "!!!!".
        if !all_finite(&out.embedding)? {
            return Err(AdiffError::Invalid(
                "HTSAT's output is not finite (NaN or infinite): the checkpoint's HTSAT weights \
                 hold non-finite values, or an input's level overflowed the front end"
                    .into(),
            ));
        }
        Ok(out)
    }
}

/// Whether every value of `t` is finite (one reduction: a NaN or an infinity makes the sum
/// non-finite).
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.to_dtype(DType::F32)?
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?
        .is_finite())
}
