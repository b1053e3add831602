//! A training plan: what a regime decides. Which parameter tensors exist (base, adapters, saved
//! copies), which are trainable, how each group is stored, and any activation memory the regime
//! adds. The memory model turns a plan into bytes; the counts below give peft's figures.

use crate::dtype::DType;
use crate::error::CountError;
use crate::shape::{AdaptedInputs, GroupAdapterUnits, ModelShape, ModuleGroup, ParamKind};
use serde::Serialize;
use std::sync::Mutex;

/// Where a parameter group comes from; peft's `all params` counts every origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamOrigin {
    /// A parameter of the base model (trainable under full fine-tuning or `bias=`).
    Base,
    /// A parameter the regime adds (LoRA A/B, lora_B bias, DoRA magnitude, a prompt embedding).
    Adapter,
    /// A trainable copy of a base module (`modules_to_save`).
    SavedCopy,
    /// A buffer the regime adds: held in memory in its own dense dtype (a `Storage::Policy`
    /// buffer is fp32, torch's default), but not a parameter, so in no parameter count.
    Buffer,
}

/// bitsandbytes' 4-bit NF4 storage of one weight tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Nf4Layout {
    /// Elements per absmax block (bitsandbytes' default 64).
    pub blocksize: u64,
    /// QLoRA's double quantization: absmax stored as uint8 with fp32 nested absmax per
    /// `nested_blocksize` blocks and one fp32 offset.
    pub double_quant: bool,
    pub nested_blocksize: u64,
    /// Count the per-tensor codebooks bitsandbytes keeps in each quant state (16 fp32, plus 256
    /// fp32 with double quant). The seed's rule leaves them out.
    pub codebooks: bool,
    /// Absmax element size without double quantization (bitsandbytes: fp32). The seed lab's text
    /// says fp16 but its arithmetic (4/64 B per weight) is fp32.
    pub absmax_dtype: DType,
}

impl Nf4Layout {
    pub const fn bitsandbytes(double_quant: bool) -> Self {
        Nf4Layout {
            blocksize: 64,
            double_quant,
            nested_blocksize: 256,
            codebooks: true,
            absmax_dtype: DType::F32,
        }
    }

    /// Exact bytes of one quantized tensor of `numel` elements.
    pub fn tensor_bytes(&self, numel: u64) -> u64 {
        let packed = numel.div_ceil(2);
        let blocks = div_ceil(numel, self.blocksize.max(1));
        let stats = if self.double_quant {
            let nested = div_ceil(blocks, self.nested_blocksize.max(1));
            blocks + 4 * nested + 4
        } else {
            blocks * self.absmax_dtype.bytes()
        };
        let codebooks = match (self.codebooks, self.double_quant) {
            (false, _) => 0,
            (true, false) => 16 * 4,
            (true, true) => 16 * 4 + 256 * 4,
        };
        packed + stats + codebooks
    }
}

/// `n.div_ceil(d)`, by a shift when `d` is a power of two (bitsandbytes' block sizes are): a
/// division by a value known only at run time is the slowest step of planning QLoRA.
#[inline]
fn div_ceil(n: u64, d: u64) -> u64 {
    if d.is_power_of_two() {
        (n >> d.trailing_zeros()) + u64::from(n & (d - 1) != 0)
    } else {
        n.div_ceil(d)
    }
}

/// How a parameter group is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Storage {
    /// As the precision policy says for trainable or frozen parameters.
    Policy,
    /// A fixed dense dtype whatever the policy.
    Dense { dtype: DType },
    /// 4-bit NormalFloat (frozen only).
    Nf4(Nf4Layout),
    /// bitsandbytes LLM.int8 (`load_in_8bit`, frozen Linear weights only): an int8 weight plus
    /// one fp32 scale (`SCB`) per output row, as `Int8Params` holds them (measured with
    /// bitsandbytes 0.50.2 on CPU: a 96x64 weight is `int8 (96, 64)` + `SCB fp32 (96,)`).
    Int8,
}

/// Bytes of one LLM.int8 weight of `numel` elements and `rows` output rows.
pub fn int8_tensor_bytes(numel: u64, rows: u64) -> Option<u64> {
    rows.checked_mul(4).and_then(|scb| numel.checked_add(scb))
}

/// The output rows of the Linear weight a group is (for per-row quantization scales).
fn weight_rows(model: &ModelShape, group: &PlannedParams) -> u64 {
    match group.source {
        ParamSource::Base { param } => match model.params[param].kind {
            ParamKind::LinearWeight(i) => model.modules[i].out_features,
            _ => 0,
        },
        ParamSource::SavedWeight { module } => model.modules[module].out_features,
        _ => 0,
    }
}

/// Which tensor a planned group is, by index into the model and by the regime's own static names
/// (no allocation: plans are built in the hot path of sweeps). [`ParamSource::describe`] gives
/// the peft-style name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ParamSource {
    /// `model.params[param]`.
    Base {
        param: usize,
    },
    /// One tensor of the adapter on `model.modules[module]`, named as peft names it under the
    /// module (`lora_A.weight`, `lora_magnitude_vector`, `ia3_l`).
    Adapter {
        module: usize,
        name: &'static str,
        /// A matmul weight that multiplies the module's own input ([`PieceMatmul::Input`]).
        reads_input: bool,
    },
    /// The `modules_to_save` copy of a module's weight.
    SavedWeight {
        module: usize,
    },
    SavedBias {
        module: usize,
    },
    /// A tensor of the regime's own, not attached to one module (a prompt-tuning embedding, a
    /// prefix encoder, a shared VeRA projection), named as peft names it.
    Extra {
        name: &'static str,
    },
}

impl ParamSource {
    /// The parameter name with layer indices as `*`, as peft would show it.
    pub fn describe(&self, model: &ModelShape) -> String {
        let module = |m: usize| model.modules[m].path.as_str();
        match *self {
            ParamSource::Base { param } => model.params[param].name.clone(),
            ParamSource::Adapter {
                module: m, name, ..
            } => format!("{}.{name}", module(m)),
            ParamSource::SavedWeight { module: m } => {
                format!("{}.modules_to_save.weight", module(m))
            }
            ParamSource::SavedBias { module: m } => format!("{}.modules_to_save.bias", module(m)),
            ParamSource::Extra { name } => name.to_string(),
        }
    }
}

/// `count` tensors of `numel` elements, all alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedParams {
    pub source: ParamSource,
    pub numel: u64,
    pub count: u64,
    pub trainable: bool,
    pub origin: ParamOrigin,
    pub storage: Storage,
    /// A Linear weight whose matmul runs in the compute dtype (autocast saves a 16-bit copy).
    pub matmul_weight: bool,
}

impl PlannedParams {
    pub fn total(&self) -> u64 {
        self.numel * self.count
    }
}

/// A size that is a linear form of an adapted module's dims and the adapter's rank, per module
/// instance: `rank x (rank_in x in + rank_out x out + rank_one) + in_one x in + out_one x out +
/// one`. Every adapter tensor peft's tuners attach to a Linear is such a form: LoRA's `r x in`
/// and `out x r`, a magnitude or IA3 vector of `out` (or `in`), VeRA's `r` and `out` scalings,
/// LoHa's four `r x in` / `out x r` factors, AdaLoRA's `r` singular values, BOFT's
/// `(m + 1) x in x b` blocks and `out` scale, FourierFT's `n` spectrum. A size that is not linear
/// in the dims (LoKr's factorizations, OFT's `(in / b)` blocks of `b (b - 1) / 2`) is computed
/// by the regime for each module and given as `one`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SizeForm {
    pub rank_in: u64,
    pub rank_out: u64,
    pub rank_one: u64,
    pub in_one: u64,
    pub out_one: u64,
    pub one: u64,
}

impl SizeForm {
    pub const ZERO: SizeForm = SizeForm {
        rank_in: 0,
        rank_out: 0,
        rank_one: 0,
        in_one: 0,
        out_one: 0,
        one: 0,
    };
    /// `rank x in` (LoRA's A).
    pub const RANK_IN: SizeForm = SizeForm {
        rank_in: 1,
        ..SizeForm::ZERO
    };
    /// `rank x out` (LoRA's B).
    pub const RANK_OUT: SizeForm = SizeForm {
        rank_out: 1,
        ..SizeForm::ZERO
    };
    /// `rank` (LoRA's `x A` per token, VeRA's `lambda_d`).
    pub const RANK: SizeForm = SizeForm {
        rank_one: 1,
        ..SizeForm::ZERO
    };
    /// `in` (IA3 on a feed-forward output layer).
    pub const IN: SizeForm = SizeForm {
        in_one: 1,
        ..SizeForm::ZERO
    };
    /// `out` (a lora_B bias, a DoRA magnitude, an IA3 vector).
    pub const OUT: SizeForm = SizeForm {
        out_one: 1,
        ..SizeForm::ZERO
    };

    /// `n`, whatever the module and rank.
    pub const fn constant(n: u64) -> SizeForm {
        SizeForm {
            one: n,
            ..SizeForm::ZERO
        }
    }

    /// The form times `k`.
    pub const fn times(self, k: u64) -> SizeForm {
        SizeForm {
            rank_in: self.rank_in.saturating_mul(k),
            rank_out: self.rank_out.saturating_mul(k),
            rank_one: self.rank_one.saturating_mul(k),
            in_one: self.in_one.saturating_mul(k),
            out_one: self.out_one.saturating_mul(k),
            one: self.one.saturating_mul(k),
        }
    }

    /// The sum of two forms (coefficients saturate: a saturated one overflows when evaluated on
    /// anything but zero, as the exact sum would).
    pub const fn plus(self, other: SizeForm) -> SizeForm {
        SizeForm {
            rank_in: self.rank_in.saturating_add(other.rank_in),
            rank_out: self.rank_out.saturating_add(other.rank_out),
            rank_one: self.rank_one.saturating_add(other.rank_one),
            in_one: self.in_one.saturating_add(other.in_one),
            out_one: self.out_one.saturating_add(other.out_one),
            one: self.one.saturating_add(other.one),
        }
    }

    /// Only `rank x in` and `in` terms: what a group's precomputed first-block sums can evaluate.
    pub const fn in_terms_only(&self) -> bool {
        self.rank_out == 0 && self.rank_one == 0 && self.out_one == 0 && self.one == 0
    }

    /// The form summed over `count` instances whose `in` and `out` add up to `ins` and `outs`
    /// (one instance: `count = 1`), or `None` past `u64`.
    #[inline(always)]
    pub fn total(&self, rank: u64, ins: u64, outs: u64, count: u64) -> Option<u64> {
        let coefficients =
            self.rank_in | self.rank_out | self.rank_one | self.in_one | self.out_one | self.one;
        if coefficients <= 1 {
            // Every coefficient 0 or 1 (LoRA's, DoRA's, IA3's forms): masked sums, one product.
            let pick = |c: u64, v: u64| v & c.wrapping_neg();
            let per_rank = pick(self.rank_in, ins)
                .checked_add(pick(self.rank_out, outs))?
                .checked_add(pick(self.rank_one, count))?;
            return rank
                .checked_mul(per_rank)?
                .checked_add(pick(self.in_one, ins))?
                .checked_add(pick(self.out_one, outs))?
                .checked_add(pick(self.one, count));
        }
        let per_rank = self
            .rank_in
            .checked_mul(ins)?
            .checked_add(self.rank_out.checked_mul(outs)?)?
            .checked_add(self.rank_one.checked_mul(count)?)?;
        rank.checked_mul(per_rank)?
            .checked_add(self.in_one.checked_mul(ins)?)?
            .checked_add(self.out_one.checked_mul(outs)?)?
            .checked_add(self.one.checked_mul(count)?)
    }
}

/// What one adapter tensor is to training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PieceRole {
    /// A trainable parameter, stored as the precision policy says for trainable ones.
    Trainable,
    /// A frozen parameter, stored as the policy says for frozen ones.
    Frozen,
    /// A buffer (VeRA's shared projections, BOFT's permutations): memory in `dtype`, but no
    /// parameter, so not in peft's `all params`.
    Buffer { dtype: DType },
}

/// Whether an adapter tensor is a matmul weight (autocast casts it to the compute dtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PieceMatmul {
    /// Not a matmul weight (a vector that scales, a bias).
    No,
    /// A matmul weight applied to the module's own input (LoRA's A): in the first block's q, k,
    /// v with a frozen embedding, nothing upstream needs a gradient and autocast keeps no copy.
    Input,
    /// A matmul weight applied to something else (LoRA's B, applied to `x A`).
    Inner,
}

/// One tensor an adapter adds to each instance of the module it adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdapterPiece {
    /// peft's name under the module (`lora_A.weight`, `lora_magnitude_vector`, `ia3_l`).
    pub name: &'static str,
    /// Elements per module instance.
    pub size: SizeForm,
    pub role: PieceRole,
    pub matmul: PieceMatmul,
}

impl AdapterPiece {
    /// A trainable tensor of `size` elements per module instance.
    pub const fn trainable(name: &'static str, size: SizeForm, matmul: PieceMatmul) -> Self {
        AdapterPiece {
            name,
            size,
            role: PieceRole::Trainable,
            matmul,
        }
    }
}

/// What an adapter keeps of its module's input for its backward, beyond its declared terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterInput {
    /// Its own matmul reads the input (LoRA's A): the input is saved (the block's normalized
    /// input, or `down_proj`'s), and under autocast each such adapter saves its own
    /// compute-dtype cast of it.
    Matmul,
    /// Nothing: what the adapter keeps is its `per_token` and the regime's activation terms
    /// (IA3's scaled outputs, OFT's rotated input).
    Declared,
}

/// The dtype an adapted Linear returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterOutput {
    /// The base Linear's (LoRA, IA3): the compute dtype under autocast.
    Base,
    /// The module input's (peft's `result.to(previous_dtype)` in OFT, BOFT, VeRA, LoHa, LoKr,
    /// FourierFT; bitsandbytes' `Linear4bit` under QLoRA): fp32 under autocast over an fp32
    /// base, where the block's norms hand fp32 to the Linears, so what the MLP keeps of an
    /// adapted gate or up output is fp32 (over a 16-bit base the input is 16-bit).
    InputDtype,
}

/// The most tensors one adapter may add to a module (LoHa's four factors; LoRA's A, B, bias and
/// magnitude).
pub const MAX_ADAPTER_PIECES: usize = 6;

/// What an adapter is, per module instance: its tensors (at most [`MAX_ADAPTER_PIECES`], in
/// peft's order) and the activation it saves per token. Const-constructible, so that a regime
/// crate declares its layouts as constants and its sites point at them; a layout that depends
/// on the regime's options is built once, when the regime is, and kept with
/// [`AdapterLayout::interned`].
///
/// ```
/// use ftbudget_core::{AdapterLayout, AdapterPiece, PieceMatmul, SizeForm};
/// // IA3 on an attention Linear: one trainable `out` vector, saving the unscaled output.
/// const IA3: AdapterLayout = AdapterLayout::new("ia3", SizeForm::OUT).with(
///     AdapterPiece::trainable("ia3_l", SizeForm::OUT, PieceMatmul::No),
/// );
/// assert_eq!(IA3.pieces().len(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdapterLayout {
    /// The adapter's name (`lora`, `dora`, `ia3`), for messages.
    pub name: &'static str,
    pieces: [AdapterPiece; MAX_ADAPTER_PIECES],
    len: u8,
    /// Elements the adapter saves per token and module instance, in the compute dtype (LoRA's
    /// `x A`, `rank`, for B's backward).
    pub per_token: SizeForm,
    /// Whether the module input is saved for the adapter ([`AdapterInput::Matmul`] unless
    /// [`AdapterLayout::with_input`] says otherwise).
    pub input: AdapterInput,
    /// The dtype the adapted Linear returns ([`AdapterOutput::Base`] unless
    /// [`AdapterLayout::with_output`] says otherwise).
    pub output: AdapterOutput,
    /// The pieces summed by what the plan's totals need, kept up to date by
    /// [`AdapterLayout::with`]: pushing an adapter is then a few evaluations of these forms.
    #[serde(skip)]
    sums: LayoutSums,
}

/// A layout's pieces summed by what the plan's totals need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayoutSums {
    trainable: SizeForm,
    frozen: SizeForm,
    trainable_tensors: u64,
    /// Matmul weights, trainable and frozen: all of them, and those reading the module input.
    trainable_matmul: SizeForm,
    frozen_matmul: SizeForm,
    trainable_input: SizeForm,
    frozen_input: SizeForm,
    /// Buffers, in bytes.
    buffer_bytes: SizeForm,
    /// Some piece is frozen or a buffer (LoRA's are not: their forms are skipped).
    frozen_or_buffers: bool,
    /// Every trainable piece is a matmul weight (`trainable_matmul == trainable`).
    trainable_all_matmul: bool,
    /// The input-reading forms have only `rank x in` and `in` terms.
    input_in_terms_only: bool,
}

impl LayoutSums {
    const ZERO: LayoutSums = LayoutSums {
        trainable: SizeForm::ZERO,
        frozen: SizeForm::ZERO,
        trainable_tensors: 0,
        trainable_matmul: SizeForm::ZERO,
        frozen_matmul: SizeForm::ZERO,
        trainable_input: SizeForm::ZERO,
        frozen_input: SizeForm::ZERO,
        buffer_bytes: SizeForm::ZERO,
        frozen_or_buffers: false,
        trainable_all_matmul: true,
        input_in_terms_only: true,
    };

    const fn plus(mut self, p: &AdapterPiece) -> Self {
        let matmul = !matches!(p.matmul, PieceMatmul::No);
        let input = matches!(p.matmul, PieceMatmul::Input);
        match p.role {
            PieceRole::Trainable => {
                self.trainable_tensors += 1;
                self.trainable = self.trainable.plus(p.size);
                if matmul {
                    self.trainable_matmul = self.trainable_matmul.plus(p.size);
                } else {
                    self.trainable_all_matmul = false;
                }
                if input {
                    self.trainable_input = self.trainable_input.plus(p.size);
                }
            }
            PieceRole::Frozen => {
                self.frozen_or_buffers = true;
                self.frozen = self.frozen.plus(p.size);
                if matmul {
                    self.frozen_matmul = self.frozen_matmul.plus(p.size);
                }
                if input {
                    self.frozen_input = self.frozen_input.plus(p.size);
                }
            }
            PieceRole::Buffer { dtype } => {
                self.frozen_or_buffers = true;
                self.buffer_bytes = self.buffer_bytes.plus(p.size.times(dtype.bytes()));
            }
        }
        self.input_in_terms_only =
            self.trainable_input.in_terms_only() && self.frozen_input.in_terms_only();
        self
    }
}

impl AdapterLayout {
    const EMPTY: AdapterPiece = AdapterPiece::trainable("", SizeForm::ZERO, PieceMatmul::No);

    /// An adapter with no tensors yet, saving `per_token` elements per token and instance.
    pub const fn new(name: &'static str, per_token: SizeForm) -> Self {
        AdapterLayout {
            name,
            pieces: [Self::EMPTY; MAX_ADAPTER_PIECES],
            len: 0,
            per_token,
            input: AdapterInput::Matmul,
            output: AdapterOutput::Base,
            sums: LayoutSums::ZERO,
        }
    }

    /// The layout with the dtype the adapted Linear returns set to `output`.
    pub const fn with_output(mut self, output: AdapterOutput) -> Self {
        self.output = output;
        self
    }

    /// The layout with what it keeps of the module input set to `input`.
    pub const fn with_input(mut self, input: AdapterInput) -> Self {
        self.input = input;
        self
    }

    /// The layout with `piece` appended (a const-evaluation error, or a panic at run time, past
    /// [`MAX_ADAPTER_PIECES`]: a regime's layouts are fixed by its code).
    pub const fn with(mut self, piece: AdapterPiece) -> Self {
        assert!(
            (self.len as usize) < MAX_ADAPTER_PIECES,
            "an adapter has at most MAX_ADAPTER_PIECES tensors"
        );
        self.pieces[self.len as usize] = piece;
        self.len += 1;
        self.sums = self.sums.plus(&piece);
        self
    }

    pub fn pieces(&self) -> &[AdapterPiece] {
        &self.pieces[..self.len as usize]
    }

    /// The layout as a `&'static` one, for a layout that depends on the regime's options
    /// (built when the regime is, not per plan). Equal layouts share one copy, so building a
    /// regime again, as sweeps do per rank, allocates nothing new.
    pub fn interned(self) -> &'static AdapterLayout {
        static INTERNED: Mutex<Vec<&'static AdapterLayout>> = Mutex::new(Vec::new());
        let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&layout) = interned.iter().find(|&&layout| *layout == self) {
            return layout;
        }
        let layout: &'static AdapterLayout = Box::leak(Box::new(self));
        interned.push(layout);
        layout
    }
}

/// An adapter on `model.modules[module]` (peft's `lora.Linear`, `ia3.Linear` and relatives), of
/// layout `layout` at rank `rank`: it stands for the layout's tensors, `count` of each (one per
/// module instance), and for the activation the layout saves per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdapterSite {
    pub module: usize,
    /// The adapter's rank (peft's `r` times the host's rank factor; 0 for rank-free adapters).
    pub rank: u64,
    pub layout: &'static AdapterLayout,
}

impl AdapterSite {
    /// The parameter groups the site stands for on `model`, `count` module instances of each
    /// tensor, in its layout's order.
    fn groups(
        self,
        model: &ModelShape,
        count: u64,
    ) -> impl Iterator<Item = PlannedParams> + use<'_> {
        let (m, layout) = (&model.modules[self.module], self.layout);
        let (rank, module) = (self.rank, self.module);
        // Fused experts share one tensor per layer: `per_tensor` instances in each.
        let per_tensor = model.instances_per_tensor(module).max(1);
        let count = count / per_tensor;
        layout.pieces().iter().map(move |p| {
            let numel = p
                .size
                .total(rank, m.in_features, m.out_features, 1)
                .unwrap_or(u64::MAX)
                .saturating_mul(per_tensor);
            let (trainable, origin, storage) = match p.role {
                PieceRole::Trainable => (true, ParamOrigin::Adapter, Storage::Policy),
                PieceRole::Frozen => (false, ParamOrigin::Adapter, Storage::Policy),
                PieceRole::Buffer { dtype } => {
                    (false, ParamOrigin::Buffer, Storage::Dense { dtype })
                }
            };
            PlannedParams {
                source: ParamSource::Adapter {
                    module,
                    name: p.name,
                    reads_input: p.matmul == PieceMatmul::Input,
                },
                numel,
                count,
                trainable,
                origin,
                storage,
                matmul_weight: p.matmul != PieceMatmul::No,
            }
        })
    }
}

/// Which base parameters a [`BaseTreatment`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseTraining {
    /// None: the base is frozen.
    Frozen,
    /// Every base parameter (full fine-tuning).
    All,
    /// Every bias, norm biases included (peft's `bias="all"`).
    Biases,
}

/// How a plan treats the base model's own parameters, one rule for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BaseTreatment {
    pub training: BaseTraining,
    /// How `nn.Linear` weights inside the blocks are stored (QLoRA: NF4;
    /// [`crate::LinearModule::quantizable`]).
    pub block_linear_storage: Storage,
    /// How every other base parameter (embeddings, norms, the lm_head, biases) is stored:
    /// [`Storage::Policy`] follows the precision policy (and `--base-dtype` when frozen); a fixed
    /// dense dtype holds whatever the settings say (peft's `prepare_model_for_kbit_training`
    /// upcasts them all to fp32).
    pub other_storage: Storage,
}

impl BaseTreatment {
    /// The planned group of `model.params[param]`.
    pub fn group(&self, model: &ModelShape, param: usize) -> PlannedParams {
        let p = &model.params[param];
        let trainable = match self.training {
            BaseTraining::Frozen => false,
            BaseTraining::All => true,
            BaseTraining::Biases => p.kind.is_bias(),
        };
        let (storage, matmul_weight) = match p.kind {
            ParamKind::LinearWeight(i) if model.modules[i].quantizable() => (
                self.block_linear_storage,
                !matches!(self.block_linear_storage, Storage::Nf4(_) | Storage::Int8),
            ),
            kind => (self.other_storage, model.is_matmul_weight(kind)),
        };
        PlannedParams {
            source: ParamSource::Base { param },
            numel: p.numel,
            count: p.count,
            trainable,
            origin: ParamOrigin::Base,
            storage,
            matmul_weight,
        }
    }
}

/// The dtype an activation term is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationDtype {
    /// The compute dtype of the precision policy (16-bit under autocast).
    Compute,
    Dense(DType),
    /// A compute-dtype copy that exists only under autocast: the cast a 16-bit op makes of an
    /// fp32 tensor it reads (OFT's rotation blocks cast for each `bmm`); without autocast the op
    /// saves the tensor itself, which another term counts.
    AutocastCopy,
}

/// Activation memory a regime adds beyond its adapters' own per-token activation (LoRA's `x A`
/// comes with each [`AdapterSite`]): `per_token * batch * seq + fixed` elements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationTerm {
    /// What the term is, named by the regime (`dora weight norm`, `dequantized weight`).
    pub name: &'static str,
    /// The module the term belongs to, if one.
    pub module: Option<usize>,
    pub per_token: u64,
    pub fixed: u64,
    pub dtype: ActivationDtype,
    /// The fixed part is a temporary of the forward, freed before the backward starts (DoRA's
    /// weight-norm graph, bitsandbytes' dequantized weight): the activation bucket holds it, the
    /// step's timeline does not carry it into the backward. Otherwise it is saved for the
    /// backward (a weight-sized delta, a prefix cache) and alive when the backward starts.
    pub freed_in_forward: bool,
}

/// What a regime decides for one model: a [`BaseTreatment`] for the base model's parameters,
/// [`AdapterSite`]s, further parameter groups (`modules_to_save` copies, or base parameters
/// planned one by one) and further activation terms. Every push keeps running [`PlanTotals`], so
/// counting and the memory model cost the same whatever the model's depth. Planning costs one
/// step for the base (from the shape's [`crate::ParamSums`]), one for a whole adapter group
/// (from its [`crate::GroupAdapterUnits`]) or one per adapted module kind otherwise.
///
/// A plan describes one model: every push takes the model its indices refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrainingPlan {
    base: Option<BaseTreatment>,
    adapters: Vec<AdapterSite>,
    /// The adapters on fewer than every instance of their module
    /// ([`TrainingPlan::push_adapter_on_layers`]): (index in `adapters`, instances). The others
    /// sit on every instance (a whole group's sites are pushed without an entry here).
    partial_adapters: Vec<(usize, u64)>,
    groups: Vec<PlannedParams>,
    activation_terms: Vec<ActivationTerm>,
    #[serde(skip)]
    totals: PlanTotals,
}

/// Running sums over a plan: everything the counts and the memory model need, independent of the
/// memory settings. A sum that would overflow `u64` sets `overflow` instead, and every figure read
/// from the plan then fails with a [`CountError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanTotals {
    pub trainable_params: u64,
    pub frozen_params: u64,
    /// Parameters of the base model (origin [`ParamOrigin::Base`]).
    pub base_params: u64,
    /// Trainable tensors (the optimizer keeps a `step` per tensor).
    pub trainable_tensors: u64,
    /// Elements with a fixed storage (dense dtype or NF4), trainable and frozen; the rest are
    /// stored as the precision policy says.
    pub trainable_fixed_elements: u64,
    pub frozen_fixed_elements: u64,
    /// Bytes of groups with a fixed storage (dense dtype or NF4).
    pub fixed_storage_bytes: u64,
    /// Elements of matmul weights stored as the policy says, trainable and frozen (what autocast
    /// casts when the policy dtype is not the compute dtype), each with the part in the first
    /// block's attention-input projections ([`first_block_elements`]).
    pub trainable_matmul: [u64; 2],
    pub frozen_matmul: [u64; 2],
    /// Elements of matmul weights with a fixed dense storage, by their dtype
    /// ([`DENSE_MATMUL_DTYPES`]), each with the part in the first block's attention-input
    /// projections: autocast casts them unless they are in the compute dtype.
    pub dense_matmul: [[u64; 2]; DENSE_MATMUL_DTYPES.len()],
    /// The dtype the base's token embedding is stored in when it is fixed rather than the
    /// policy's (`prepare_model_for_kbit_training`'s fp32). It sets the residual stream's dtype,
    /// and the memory model reads it as the frozen base's dense dtype (lm_head, experts).
    pub embedding_dtype: Option<DType>,
    /// Some base parameter is trained (so the embedding output needs a gradient).
    pub base_trainable: bool,
    /// An adapter sits on an attention Linear that does not read the block input (the output
    /// projection).
    pub adapts_attention_output: bool,
    /// Activation terms in the compute dtype, in elements: per token and fixed.
    pub compute_terms: [u64; 2],
    /// Activation terms in a fixed dtype, in bytes: per token and fixed.
    pub dense_term_bytes: [u64; 2],
    /// Activation terms that only autocast makes ([`ActivationDtype::AutocastCopy`]), in
    /// compute-dtype elements: per token and fixed.
    pub autocast_terms: [u64; 2],
    /// The fixed parts of the terms freed in the forward
    /// ([`ActivationTerm::freed_in_forward`]): compute-dtype elements and fixed-dtype bytes.
    pub forward_temporaries: [u64; 2],
    /// Tokens the regime adds to every sequence (prompt tuning's virtual tokens): the
    /// activation model sees `seq + extra_tokens`.
    pub extra_tokens: u64,
    /// The block inputs the adapters read (the activation model's saved matmul inputs when the
    /// base is frozen).
    pub adapted_inputs: AdaptedInputs,
    pub overflow: bool,
}

/// The dtypes [`PlanTotals::dense_matmul`] is kept by, in its order: the floating-point ones a
/// matmul weight can be stored in (three slots keep `PlanTotals` small enough to be reset
/// without a `memset` call, on the hot path of every plan).
pub const DENSE_MATMUL_DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// The slot of `dtype` in [`PlanTotals::dense_matmul`]. No matmul weight is stored in an integer
/// dtype (int8 and NF4 weights have their own storages); one would count as fp32.
const fn dense_matmul_slot(dtype: DType) -> usize {
    match dtype {
        DType::F32 | DType::U8 | DType::I64 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
    }
}

/// Elements of a matmul weight group that sit in the first block's q, k, v (or fused qkv), base
/// weights and adapter tensors applied to the module input (LoRA's A): with a frozen embedding nothing upstream of them needs a gradient, so
/// autocast does not save their 16-bit copies.
pub fn first_block_elements(model: &ModelShape, group: &PlannedParams) -> u64 {
    let module = match group.source {
        ParamSource::Base { param } => match model.params[param].kind {
            ParamKind::LinearWeight(i) => i,
            _ => return 0,
        },
        ParamSource::Adapter {
            module,
            reads_input: true,
            ..
        } => module,
        _ => return 0,
    };
    let first_block = model.modules[module].first_block_instances(model.dims.layers);
    group.numel.saturating_mul(group.count.min(first_block))
}

impl AdaptedInputs {
    /// What an adapter of `layout` adds, where `self` is its module's (or group's) `reads`:
    /// the inputs only when its own matmul reads the module input, the widened MLP outputs only
    /// when it returns its input's dtype.
    #[inline(always)]
    pub fn by(self, layout: &AdapterLayout) -> AdaptedInputs {
        let dtype_outputs = if layout.output == AdapterOutput::InputDtype {
            self.mlp_input_dtype_outputs
        } else {
            0
        };
        let mut adds = if layout.input == AdapterInput::Matmul {
            self
        } else {
            AdaptedInputs::default()
        };
        adds.mlp_input_dtype_outputs = dtype_outputs;
        adds
    }
}

impl PlanTotals {
    #[inline(always)]
    fn add(&mut self, slot: fn(&mut PlanTotals) -> &mut u64, value: Option<u64>) {
        match value.and_then(|v| slot(self).checked_add(v)) {
            Some(sum) => *slot(self) = sum,
            None => self.overflow = true,
        }
    }

    /// Account for one parameter group, whatever its kind: the reference every faster path
    /// ([`TrainingPlan::set_base`], [`TrainingPlan::push_adapter`]) must agree with.
    pub fn add_group(&mut self, model: &ModelShape, group: &PlannedParams) {
        let n = group.numel.checked_mul(group.count);
        if group.origin == ParamOrigin::Buffer {
            let bytes = match group.storage {
                Storage::Policy => n.and_then(|n| n.checked_mul(DType::F32.bytes())),
                Storage::Dense { dtype } => n.and_then(|n| n.checked_mul(dtype.bytes())),
                Storage::Nf4(layout) => group.count.checked_mul(layout.tensor_bytes(group.numel)),
                Storage::Int8 => int8_tensor_bytes(group.numel, weight_rows(model, group))
                    .and_then(|b| b.checked_mul(group.count)),
            };
            self.add(|t| &mut t.fixed_storage_bytes, bytes);
            return;
        }
        if group.trainable {
            self.add(|t| &mut t.trainable_params, n);
            self.add(|t| &mut t.trainable_tensors, Some(group.count));
            self.base_trainable |= group.origin == ParamOrigin::Base;
        } else {
            self.add(|t| &mut t.frozen_params, n);
        }
        if group.origin == ParamOrigin::Base {
            self.add(|t| &mut t.base_params, n);
        }
        let first_block = Some(first_block_elements(model, group));
        match group.storage {
            Storage::Policy if group.trainable => {
                if group.matmul_weight {
                    self.add(|t| &mut t.trainable_matmul[0], n);
                    self.add(|t| &mut t.trainable_matmul[1], first_block);
                }
            }
            Storage::Policy => {
                if group.matmul_weight {
                    self.add(|t| &mut t.frozen_matmul[0], n);
                    self.add(|t| &mut t.frozen_matmul[1], first_block);
                }
            }
            Storage::Dense { dtype } => {
                self.add_fixed(group.trainable, n);
                let bytes = n.and_then(|n| n.checked_mul(dtype.bytes()));
                self.add(|t| &mut t.fixed_storage_bytes, bytes);
                if group.matmul_weight {
                    self.add_dense_matmul(dtype, [n, first_block]);
                }
                if let ParamSource::Base { param } = group.source
                    && model.params[param].kind == ParamKind::Embedding
                {
                    self.embedding_dtype = Some(dtype);
                }
            }
            Storage::Nf4(layout) => {
                self.add_fixed(group.trainable, n);
                let bytes = group.count.checked_mul(layout.tensor_bytes(group.numel));
                self.add(|t| &mut t.fixed_storage_bytes, bytes);
            }
            Storage::Int8 => {
                self.add_fixed(group.trainable, n);
                let bytes = int8_tensor_bytes(group.numel, weight_rows(model, group))
                    .and_then(|b| b.checked_mul(group.count));
                self.add(|t| &mut t.fixed_storage_bytes, bytes);
            }
        }
    }

    /// Account for adapters of `layout` over `span`, whose trainable elements are `trainable`.
    #[inline(always)]
    fn add_adapters(&mut self, layout: &AdapterLayout, span: &AdapterSpan, trainable: Option<u64>) {
        let sums = &layout.sums;
        self.add(|t| &mut t.trainable_params, trainable);
        let tensors = (span.count / span.per_tensor.max(1)).checked_mul(sums.trainable_tensors);
        self.add(|t| &mut t.trainable_tensors, tensors);
        // (LoRA's trainable tensors are all matmul weights: one evaluation for both.)
        let matmul = if sums.trainable_all_matmul {
            trainable
        } else {
            span.all(&sums.trainable_matmul)
        };
        self.add(|t| &mut t.trainable_matmul[0], matmul);
        let first = span.first_block(&sums.trainable_input);
        self.add(|t| &mut t.trainable_matmul[1], first);
        if sums.frozen_or_buffers {
            self.add(|t| &mut t.frozen_params, span.all(&sums.frozen));
            self.add(|t| &mut t.frozen_matmul[0], span.all(&sums.frozen_matmul));
            let first = span.first_block(&sums.frozen_input);
            self.add(|t| &mut t.frozen_matmul[1], first);
            self.add(|t| &mut t.fixed_storage_bytes, span.all(&sums.buffer_bytes));
        }
        self.add(|t| &mut t.compute_terms[0], span.all(&layout.per_token));
    }

    fn add_dense_matmul(&mut self, dtype: DType, [all, first_block]: [Option<u64>; 2]) {
        let slot = &mut self.dense_matmul[dense_matmul_slot(dtype)];
        let mut overflow = false;
        for (sum, value) in slot.iter_mut().zip([all, first_block]) {
            match value.and_then(|v| sum.checked_add(v)) {
                Some(v) => *sum = v,
                None => overflow = true,
            }
        }
        self.overflow |= overflow;
    }

    fn add_fixed(&mut self, trainable: bool, elements: Option<u64>) {
        if trainable {
            self.add(|t| &mut t.trainable_fixed_elements, elements);
        } else {
            self.add(|t| &mut t.frozen_fixed_elements, elements);
        }
    }

    /// Account for one activation term.
    #[inline]
    pub fn add_activation_term(&mut self, term: &ActivationTerm) {
        // Compute-dtype terms are kept in elements, fixed-dtype ones in bytes.
        let (slot, temporaries, scale) = match term.dtype {
            ActivationDtype::Compute => (&mut self.compute_terms, 0, 1),
            ActivationDtype::Dense(dtype) => (&mut self.dense_term_bytes, 1, dtype.bytes()),
            ActivationDtype::AutocastCopy => (&mut self.autocast_terms, 0, 1),
        };
        let per_token = term
            .per_token
            .checked_mul(scale)
            .and_then(|v| slot[0].checked_add(v));
        let fixed = term.fixed.checked_mul(scale);
        match (per_token, fixed.and_then(|v| slot[1].checked_add(v))) {
            (Some(per_token), Some(sum)) => *slot = [per_token, sum],
            _ => self.overflow = true,
        }
        if term.freed_in_forward {
            match fixed.and_then(|v| self.forward_temporaries[temporaries].checked_add(v)) {
                Some(sum) => self.forward_temporaries[temporaries] = sum,
                None => self.overflow = true,
            }
        }
    }
}

/// Adapters at one rank over module instances whose `in`, `out` and counts add up to `ins`,
/// `outs` and `count`, and what of them sits in the first block's attention inputs.
struct AdapterSpan {
    rank: u64,
    ins: u64,
    outs: u64,
    count: u64,
    /// Instances that share one tensor (peft's `ParamWrapper` on fused experts keeps one
    /// lora_A/lora_B per layer for all of a layer's experts); 1 otherwise.
    per_tensor: u64,
    first: FirstBlock,
}

/// The first block's instances that read the attention input, as the forms need them.
enum FirstBlock {
    /// Only their `in` summed (what a group precomputes): enough for forms with only `rank x in`
    /// and `in` terms.
    InTerms {
        first_block_in: u64,
    },
    All {
        ins: u64,
        outs: u64,
        count: u64,
    },
}

impl AdapterSpan {
    /// `form` over every instance.
    #[inline(always)]
    fn all(&self, form: &SizeForm) -> Option<u64> {
        form.total(self.rank, self.ins, self.outs, self.count)
    }

    /// `form` over the first block's attention-input instances.
    #[inline(always)]
    fn first_block(&self, form: &SizeForm) -> Option<u64> {
        match self.first {
            FirstBlock::InTerms { first_block_in } => {
                let per_in = self
                    .rank
                    .checked_mul(form.rank_in)?
                    .checked_add(form.in_one)?;
                per_in.checked_mul(first_block_in)
            }
            FirstBlock::All { ins, outs, count } => form.total(self.rank, ins, outs, count),
        }
    }
}

/// The first tensor of `layout` too large for `u64` at this rank and module size, as an error.
#[cold]
#[inline(never)]
fn check_pieces(
    layout: &AdapterLayout,
    rank: u64,
    in_features: u64,
    out_features: u64,
) -> Result<(), CountError> {
    for p in layout.pieces() {
        if p.size.total(rank, in_features, out_features, 1).is_none() {
            return Err(CountError { what: p.name });
        }
    }
    Ok(())
}

fn sum(what: &'static str, total: u64, overflow: bool) -> Result<u64, CountError> {
    if overflow {
        Err(CountError { what })
    } else {
        Ok(total)
    }
}

/// [`TrainingPlan::set_base`]'s totals for the base parameters outside the block Linears when
/// [`BaseTreatment::other_storage`] fixes their storage (`trained`: the base elements the
/// treatment trains, none of them block Linear weights unless every parameter is).
#[cold]
#[inline(never)]
fn other_storage_totals(model: &ModelShape, base: BaseTreatment, trained: u64, t: &mut PlanTotals) {
    let sums = &model.sums;
    let others = sums.params - sums.block_linear_params;
    let trained = match base.training {
        BaseTraining::All => others,
        BaseTraining::Frozen | BaseTraining::Biases => trained,
    };
    t.add_fixed(true, Some(trained));
    t.add_fixed(false, Some(others - trained));
    let others_matmul = sums.matmul_params - sums.block_linear_params;
    match base.other_storage {
        Storage::Policy => {}
        Storage::Dense { dtype } => {
            t.add(
                |t| &mut t.fixed_storage_bytes,
                others.checked_mul(dtype.bytes()),
            );
            t.add_dense_matmul(dtype, [Some(others_matmul), Some(0)]);
            t.embedding_dtype = Some(dtype);
        }
        Storage::Nf4(_) | Storage::Int8 => {
            // Quantized storage outside the blocks: each tensor's own layout.
            for (param, p) in model.params.iter().enumerate() {
                let group = base.group(model, param);
                if !matches!(p.kind, ParamKind::LinearWeight(i) if model.modules[i].quantizable()) {
                    let bytes = match group.storage {
                        Storage::Nf4(layout) => p.count.checked_mul(layout.tensor_bytes(p.numel)),
                        _ => int8_tensor_bytes(p.numel, weight_rows(model, &group))
                            .and_then(|b| b.checked_mul(p.count)),
                    };
                    t.add(|t| &mut t.fixed_storage_bytes, bytes);
                }
            }
        }
    }
}

impl TrainingPlan {
    /// The block Linears' weights are stored in NF4 (bitsandbytes' `Linear4bit`, which returns
    /// its input's dtype): from the base treatment, or, for a plan whose base parameters are
    /// planned one by one (peft's `bias="lora_only"`, QLoRA's biases in the compute dtype), from
    /// the planned groups.
    pub fn nf4_block_linears(&self) -> bool {
        match self.base() {
            Some(base) => matches!(base.block_linear_storage, Storage::Nf4(_)),
            None => self.nf4_base_group(),
        }
    }

    #[cold]
    fn nf4_base_group(&self) -> bool {
        self.extra_groups()
            .iter()
            .any(|g| g.origin == ParamOrigin::Base && matches!(g.storage, Storage::Nf4(_)))
    }

    /// Empty the plan, keeping its allocations (for sweeps that plan millions of times).
    pub fn clear(&mut self) {
        self.base = None;
        self.adapters.clear();
        self.partial_adapters.clear();
        self.groups.clear();
        self.activation_terms.clear();
        self.totals = PlanTotals::default();
    }

    /// Plan every base parameter of `model` by one rule. At most once per plan; base parameters
    /// that need different rules are pushed one by one with [`TrainingPlan::push_group`] instead.
    pub fn set_base(&mut self, model: &ModelShape, base: BaseTreatment) {
        debug_assert!(self.base.is_none(), "set_base called twice on one plan");
        let sums = &model.sums;
        let (trained, trained_tensors) = match base.training {
            BaseTraining::Frozen => (0, 0),
            BaseTraining::All => (sums.params, sums.tensors),
            BaseTraining::Biases => (sums.bias_params, sums.bias_tensors),
        };
        let frozen = sums.params - trained;
        let t = &mut self.totals;
        t.add(|t| &mut t.trainable_params, Some(trained));
        t.add(|t| &mut t.trainable_tensors, Some(trained_tensors));
        t.add(|t| &mut t.frozen_params, Some(frozen));
        t.add(|t| &mut t.base_params, Some(sums.params));
        t.base_trainable |= trained > 0;
        // Matmul weights: every Linear weight and a tied embedding; biases never are. Block
        // Linears (all the first block's q, k, v among them) may have their own storage.
        let (matmul_all, matmul_first) = (sums.matmul_params, sums.first_block_attention_params);
        let (mut policy_matmul, policy_first, moved) = match base.block_linear_storage {
            Storage::Policy => (matmul_all, matmul_first, 0),
            _ => (
                matmul_all - sums.block_linear_params,
                0,
                sums.block_linear_params,
            ),
        };
        let trained_matmul = base.training == BaseTraining::All;
        t.add_fixed(trained_matmul, Some(moved));
        if base.other_storage != Storage::Policy {
            policy_matmul -= matmul_all - sums.block_linear_params;
            other_storage_totals(model, base, trained, t);
        }
        let matmul = if trained_matmul {
            &mut t.trainable_matmul
        } else {
            &mut t.frozen_matmul
        };
        let mut overflow = false;
        for (slot, v) in matmul.iter_mut().zip([policy_matmul, policy_first]) {
            match slot.checked_add(v) {
                Some(sum) => *slot = sum,
                None => overflow = true,
            }
        }
        t.overflow |= overflow;
        match base.block_linear_storage {
            Storage::Policy => {}
            Storage::Dense { dtype } => {
                let bytes = sums.block_linear_params.checked_mul(dtype.bytes());
                t.add(|t| &mut t.fixed_storage_bytes, bytes);
                t.add_dense_matmul(dtype, [Some(sums.block_linear_params), Some(matmul_first)]);
            }
            Storage::Nf4(layout) => {
                // Each tensor has its own absmax blocks and codebooks: one term per kind.
                for p in &model.params {
                    if let ParamKind::LinearWeight(i) = p.kind
                        && model.modules[i].quantizable()
                    {
                        let bytes = p.count.checked_mul(layout.tensor_bytes(p.numel));
                        t.add(|t| &mut t.fixed_storage_bytes, bytes);
                    }
                }
            }
            Storage::Int8 => {
                // The int8 weights, plus one fp32 scale per output row of each weight.
                let rows: Option<u64> = model.params.iter().try_fold(0u64, |acc, p| match p.kind {
                    ParamKind::LinearWeight(i) if model.modules[i].quantizable() => p
                        .count
                        .checked_mul(model.modules[i].out_features)?
                        .checked_add(acc),
                    _ => Some(acc),
                });
                let bytes = rows
                    .and_then(|r| r.checked_mul(4))
                    .and_then(|scb| scb.checked_add(sums.block_linear_params));
                t.add(|t| &mut t.fixed_storage_bytes, bytes);
            }
        }
        self.base = Some(base);
    }

    /// Add a parameter group planned for `model` (its `source` indexes `model`).
    pub fn push_group(&mut self, model: &ModelShape, group: PlannedParams) {
        self.totals.add_group(model, &group);
        self.groups.push(group);
    }

    /// Add `count` tensors of `numel` elements that belong to the regime as a whole rather than
    /// to one module (a prompt-tuning embedding of `virtual_tokens x hidden`, a prefix encoder),
    /// stored as the precision policy says; `name` is peft's.
    pub fn push_extra_params(
        &mut self,
        model: &ModelShape,
        name: &'static str,
        numel: u64,
        count: u64,
        trainable: bool,
    ) {
        self.push_group(
            model,
            PlannedParams {
                source: ParamSource::Extra { name },
                numel,
                count,
                trainable,
                origin: ParamOrigin::Adapter,
                storage: Storage::Policy,
                matmul_weight: false,
            },
        );
    }

    /// Add `count` buffers of `numel` elements in `dtype` that belong to the regime as a whole
    /// (VeRA's shared projections): memory, but in no parameter count.
    pub fn push_buffer(
        &mut self,
        model: &ModelShape,
        name: &'static str,
        numel: u64,
        count: u64,
        dtype: DType,
    ) {
        self.push_group(
            model,
            PlannedParams {
                source: ParamSource::Extra { name },
                numel,
                count,
                trainable: false,
                origin: ParamOrigin::Buffer,
                storage: Storage::Dense { dtype },
                matmul_weight: false,
            },
        );
    }

    /// Lengthen every sequence by `tokens` (prompt tuning's virtual tokens, prepended to the
    /// input): the activation model sees `seq + extra_tokens`.
    pub fn add_extra_tokens(&mut self, tokens: u64) {
        self.totals.add(|t| &mut t.extra_tokens, Some(tokens));
    }

    /// Add an adapter on `model.modules[site.module]`: its layout's tensors and its per-token
    /// activation. Fails, naming the tensor, when one of its tensors has more than `u64::MAX`
    /// elements; a sum past `u64` marks the totals as overflowed instead.
    #[inline(always)]
    pub fn push_adapter(
        &mut self,
        model: &ModelShape,
        site: AdapterSite,
    ) -> Result<(), CountError> {
        let m = &model.modules[site.module];
        let (r, layout) = (site.rank, site.layout);
        let units = m.adapter_units;
        let (ins, outs) = (units.in_plus_out_count - units.out_count, units.out_count);
        let sums = &layout.sums;
        let first = if sums.input_in_terms_only {
            FirstBlock::InTerms {
                first_block_in: units.first_block_in,
            }
        } else {
            let first = m.first_block_instances(model.dims.layers);
            FirstBlock::All {
                ins: m.in_features * first,
                outs: m.out_features * first,
                count: first,
            }
        };
        let span = AdapterSpan {
            rank: r,
            ins,
            outs,
            count: m.count,
            per_tensor: model.instances_per_tensor(site.module),
            first,
        };
        // A tensor too large for u64 makes its sum over the instances too large as well: only
        // then are the tensors checked one by one, to name the first.
        let trainable = span.all(&sums.trainable);
        if trainable.is_none()
            || sums.frozen_or_buffers
                && (span.all(&sums.frozen).is_none() || span.all(&sums.buffer_bytes).is_none())
        {
            check_pieces(layout, r, m.in_features, m.out_features)?;
        }
        self.totals.add_adapters(layout, &span, trainable);
        self.totals.adapts_attention_output |= m.group == ModuleGroup::Attention
            && !m.reads_attention_input
            && layout.input == AdapterInput::Matmul;
        self.totals.adapted_inputs =
            (self.totals.adapted_inputs).plus(m.adapter_units.reads.by(layout));
        self.adapters.push(site);
        Ok(())
    }

    /// Add an adapter on `selected` of the `layers` layers a block module repeats in (peft's
    /// `layers_to_transform`, or the layers `rank_pattern` gives one rank): `m.count / layers x
    /// selected` instances. The module's `count` must be a whole number of instances per layer
    /// (every block Linear's is). The lowest adapted layer plays the first block's part (with a
    /// frozen base nothing upstream of its q, k, v needs a gradient), as
    /// [`first_block_elements`] counts it: one layer's instances per site. When `rank_pattern`
    /// splits a module's layers over several sites, each site counts one such layer, so the
    /// autocast copies of lora_A saved are under-counted by `in x r` per extra site.
    pub fn push_adapter_on_layers(
        &mut self,
        model: &ModelShape,
        site: AdapterSite,
        selected: u64,
    ) -> Result<(), CountError> {
        let m = &model.modules[site.module];
        let (r, layout) = (site.rank, site.layout);
        let layers = model.dims.layers.max(1);
        let instances = (m.count / layers).checked_mul(selected).ok_or(CountError {
            what: "adapted instances",
        })?;
        let ins = m.in_features.checked_mul(instances);
        let outs = m.out_features.checked_mul(instances);
        let (Some(ins), Some(outs)) = (ins, outs) else {
            return Err(CountError {
                what: "adapted instances",
            });
        };
        let first = m.first_block_instances(model.dims.layers).min(instances);
        let span = AdapterSpan {
            rank: r,
            ins,
            outs,
            count: instances,
            per_tensor: model.instances_per_tensor(site.module),
            first: FirstBlock::All {
                ins: m.in_features * first,
                outs: m.out_features * first,
                count: first,
            },
        };
        let sums = &layout.sums;
        let trainable = span.all(&sums.trainable);
        if trainable.is_none()
            || sums.frozen_or_buffers
                && (span.all(&sums.frozen).is_none() || span.all(&sums.buffer_bytes).is_none())
        {
            check_pieces(layout, r, m.in_features, m.out_features)?;
        }
        self.totals.add_adapters(layout, &span, trainable);
        self.totals.adapts_attention_output |= m.group == ModuleGroup::Attention
            && !m.reads_attention_input
            && layout.input == AdapterInput::Matmul;
        self.totals.adapted_inputs =
            (self.totals.adapted_inputs).plus(m.adapter_units.reads.by(layout));
        self.adapters.push(site);
        self.partial_adapters
            .push((self.adapters.len() - 1, instances));
        Ok(())
    }

    /// Add a rank-`rank` adapter of `layout` on every module of a target group in one step,
    /// from the sums the shape precomputed. Returns `false`, adding nothing, when the group
    /// holds a parameter host (whose rank differs), `rank` is past the group's `max_rank`, or
    /// the layout has input-reading tensors the group sums cannot evaluate: push those adapters
    /// one by one with [`TrainingPlan::push_adapter`].
    pub fn try_push_group_adapters(
        &mut self,
        units: &GroupAdapterUnits,
        rank: u64,
        layout: &'static AdapterLayout,
    ) -> bool {
        if !units.module_hosts_only || rank > units.max_rank || !layout.sums.input_in_terms_only {
            return false;
        }
        let (ins, outs) = (units.in_plus_out_count - units.out_count, units.out_count);
        let span = AdapterSpan {
            rank,
            ins,
            outs,
            count: units.count,
            // Module hosts only: one tensor per instance.
            per_tensor: 1,
            // Input-reading tensors have only `rank x in` and `in` terms (checked above).
            first: FirstBlock::InTerms {
                first_block_in: units.first_block_in,
            },
        };
        let trainable = span.all(&layout.sums.trainable);
        self.totals.add_adapters(layout, &span, trainable);
        self.totals.adapts_attention_output |=
            units.has_attention_output && layout.input == AdapterInput::Matmul;
        self.totals.adapted_inputs = self.totals.adapted_inputs.plus(units.reads.by(layout));
        // One site per module of the group, lowest index first; `extend` over a slice sizes the
        // vector once (sweeps plan millions of times).
        let modules = units.modules.as_slice();
        self.adapters
            .extend(modules.iter().map(|&module| AdapterSite {
                module: usize::from(module),
                rank,
                layout,
            }));
        true
    }

    /// Add activation memory the regime needs.
    pub fn push_activation_term(&mut self, term: ActivationTerm) {
        self.totals.add_activation_term(&term);
        self.activation_terms.push(term);
    }

    /// The treatment of the base model's parameters, if the plan set one.
    pub fn base(&self) -> Option<&BaseTreatment> {
        self.base.as_ref()
    }

    /// Parameter groups pushed one by one (saved copies, base parameters planned apart, a
    /// regime's own tensors), beyond the base treatment and the adapter sites.
    pub fn extra_groups(&self) -> &[PlannedParams] {
        &self.groups
    }

    /// The adapted Linear modules.
    pub fn adapters(&self) -> &[AdapterSite] {
        &self.adapters
    }

    /// The module instances adapter `i` of [`TrainingPlan::adapters`] sits on.
    pub fn adapter_instance_count(&self, model: &ModelShape, i: usize) -> u64 {
        self.partial_adapters
            .iter()
            .find(|&&(site, _)| site == i)
            .map_or(model.modules[self.adapters[i].module].count, |&(_, n)| n)
    }

    /// Activation terms pushed one by one (beyond the adapters' own per-token activation).
    pub fn activation_terms(&self) -> &[ActivationTerm] {
        &self.activation_terms
    }

    pub fn totals(&self) -> &PlanTotals {
        &self.totals
    }

    /// Tokens the regime adds to every sequence.
    pub fn extra_tokens(&self) -> u64 {
        self.totals.extra_tokens
    }

    /// Every parameter group of the plan on `model`: the base treatment's (one per base
    /// parameter), each adapter's, then the extra groups.
    pub fn groups<'a>(&'a self, model: &'a ModelShape) -> impl Iterator<Item = PlannedParams> + 'a {
        let base = self
            .base
            .iter()
            .flat_map(move |b| (0..model.params.len()).map(move |i| b.group(model, i)));
        base.chain(
            self.adapters.iter().enumerate().flat_map(move |(i, site)| {
                site.groups(model, self.adapter_instance_count(model, i))
            }),
        )
        .chain(self.groups.iter().cloned())
    }

    /// The totals recomputed group by group through [`PlanTotals::add_group`] (the reference the
    /// running totals are tested against).
    pub fn recount(&self, model: &ModelShape) -> PlanTotals {
        let mut totals = PlanTotals::default();
        for g in self.groups(model) {
            totals.add_group(model, &g);
        }
        for (i, site) in self.adapters.iter().enumerate() {
            let m = &model.modules[site.module];
            let count = self.adapter_instance_count(model, i);
            let layout = site.layout;
            let per_token = layout
                .per_token
                .total(site.rank, m.in_features, m.out_features, 1)
                .and_then(|n| n.checked_mul(count));
            totals.overflow |= per_token.is_none();
            totals.add_activation_term(&ActivationTerm {
                name: layout.name,
                module: Some(site.module),
                per_token: per_token.unwrap_or(0),
                fixed: 0,
                dtype: ActivationDtype::Compute,
                freed_in_forward: false,
            });
            totals.adapts_attention_output |= m.group == ModuleGroup::Attention
                && !m.reads_attention_input
                && layout.input == AdapterInput::Matmul;
            totals.adapted_inputs = totals.adapted_inputs.plus(m.adapter_units.reads.by(layout));
        }
        for term in &self.activation_terms {
            totals.add_activation_term(term);
        }
        totals.extra_tokens = self.totals.extra_tokens;
        totals
    }

    /// Parameters updated by the optimizer.
    pub fn trainable_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        sum("trainable_params", t.trainable_params, t.overflow)
    }

    /// Parameters held but not updated.
    pub fn frozen_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        sum("frozen_params", t.frozen_params, t.overflow)
    }

    /// peft's `all params`: base model + adapters + `modules_to_save` copies, every tensor at its
    /// logical (unpacked) size.
    pub fn all_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        let all = t.trainable_params.checked_add(t.frozen_params);
        sum("all_params", all.unwrap_or(0), t.overflow || all.is_none())
    }

    /// The base model's own parameters.
    pub fn base_params(&self) -> Result<u64, CountError> {
        let t = &self.totals;
        sum("base_params", t.base_params, t.overflow)
    }

    /// Parameters added by the regime (adapters and saved copies).
    pub fn added_params(&self) -> Result<u64, CountError> {
        Ok(self.all_params()? - self.base_params()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_base_treatment_matches_a_recount() {
        use crate::spec::TransformerSpec;
        // Biases, LayerNorm biases and an untied lm_head as well.
        let biased = TransformerSpec {
            qkv_bias: true,
            mlp_bias: true,
            tied_embeddings: false,
            norm: crate::shape::NormKind::LayerNorm { bias: true },
            ..TransformerSpec::minigpt()
        };
        for model in [
            TransformerSpec::minigpt().build().unwrap(),
            biased.build().unwrap(),
        ] {
            for training in [
                BaseTraining::Frozen,
                BaseTraining::All,
                BaseTraining::Biases,
            ] {
                for (block_linear_storage, other_storage) in [
                    (Storage::Policy, Storage::Policy),
                    (Storage::Dense { dtype: DType::U8 }, Storage::Policy),
                    (Storage::Nf4(Nf4Layout::bitsandbytes(true)), Storage::Policy),
                    (Storage::Policy, Storage::Dense { dtype: DType::F32 }),
                    (
                        Storage::Nf4(Nf4Layout::bitsandbytes(false)),
                        Storage::Dense { dtype: DType::F32 },
                    ),
                    (
                        Storage::Dense { dtype: DType::BF16 },
                        Storage::Dense { dtype: DType::F16 },
                    ),
                    (Storage::Policy, Storage::Nf4(Nf4Layout::bitsandbytes(true))),
                ] {
                    let mut plan = TrainingPlan::default();
                    let base = BaseTreatment {
                        training,
                        block_linear_storage,
                        other_storage,
                    };
                    plan.set_base(&model, base);
                    assert_eq!(*plan.totals(), plan.recount(&model), "{base:?}");
                    assert_eq!(plan.groups(&model).count(), model.params.len());
                }
            }
        }
    }

    /// A legal but absurd module (2^26 x 2^26, once) puts huge ranks at and past the unchecked
    /// fast path: at its bound the figures are exact, past it a sum too large for u64 fails as a
    /// count error and a tensor too large is named.
    #[test]
    fn adapters_at_and_beyond_the_fast_path() {
        use crate::shape::{
            AttentionLayout, Dims, Family, LinearLayout, LinearModule, MlpLayout, ModelShape,
            ModuleGroup, NormKind, ParamGroup, PositionKind,
        };
        let side = 1u64 << 26;
        let model = ModelShape::from_parts(
            "wide",
            Family::new("custom"),
            Dims {
                hidden: 1,
                layers: 1,
                heads: 1,
                kv_heads: 1,
                head_dim: 1,
                intermediate: 1,
                vocab: 1,
                max_positions: 1,
            },
            crate::shape::Architecture {
                norm: NormKind::RmsNorm,
                attention: AttentionLayout::Separate,
                mlp: MlpLayout::Plain,
                positions: PositionKind::Rotary,
                block: crate::shape::BlockSpec::DECODER,
            },
            false,
            vec![LinearModule::new(
                "layers.*.mlp.down_proj",
                (side, side),
                false,
                1,
                LinearLayout::Linear,
                ModuleGroup::Mlp,
            )],
            vec![ParamGroup {
                name: "layers.*.mlp.down_proj.weight".into(),
                numel: side * side,
                count: 1,
                kind: ParamKind::LinearWeight(0),
            }],
        )
        .unwrap();
        let max_rank = model.modules[0].adapter_units.max_rank;
        // (2^64 - 1 - 2^27) / 2^27, by hand.
        assert_eq!(max_rank, (1 << 37) - 2);
        // DoRA's tensors: A, B and a magnitude of `out`.
        const DORA: AdapterLayout = AdapterLayout::new("dora", SizeForm::RANK)
            .with(AdapterPiece::trainable(
                "lora_A.weight",
                SizeForm::RANK_IN,
                PieceMatmul::Input,
            ))
            .with(AdapterPiece::trainable(
                "lora_B.weight",
                SizeForm::RANK_OUT,
                PieceMatmul::Inner,
            ))
            .with(AdapterPiece::trainable(
                "lora_magnitude_vector",
                SizeForm::OUT,
                PieceMatmul::No,
            ));
        let mut plan = TrainingPlan::default();
        let site = AdapterSite {
            module: 0,
            rank: max_rank,
            layout: &DORA,
        };
        plan.push_adapter(&model, site).unwrap();
        assert_eq!(plan.trainable_params().unwrap(), max_rank * 2 * side + side);
        assert_eq!(*plan.totals(), plan.recount(&model));

        // lora_A and lora_B fit, their sum does not.
        let mut plan = TrainingPlan::default();
        let past = AdapterSite {
            rank: (1 << 37) + 1,
            ..site
        };
        plan.push_adapter(&model, past).unwrap();
        assert!(plan.trainable_params().is_err());
        assert!(plan.recount(&model).overflow);

        let too_large = AdapterSite {
            rank: 1 << 38,
            ..site
        };
        assert_eq!(
            plan.push_adapter(&model, too_large).unwrap_err().what,
            "lora_A.weight"
        );
    }

    /// A layout beyond LoRA's (coefficients of 2, a frozen parameter, a buffer) on MiniGPT's
    /// all-linear group (per layer q, k, v, o of 64 x 64, fc1 64 -> 256, fc2 256 -> 64: `in` and
    /// `out` each sum to 576 per layer, 2,304 over 4 layers, 24 module instances), in one step
    /// and module by module.
    #[test]
    fn a_general_layout_counts_alike_by_group_and_by_module() {
        use crate::spec::TransformerSpec;
        use crate::targets::TargetSpec;
        const GENERAL: AdapterLayout = AdapterLayout::new("general", SizeForm::RANK)
            .with(AdapterPiece::trainable(
                "w_a",
                SizeForm::RANK_IN,
                PieceMatmul::Input,
            ))
            .with(AdapterPiece::trainable(
                "w_hada",
                SizeForm::RANK_IN.plus(SizeForm::RANK_OUT).times(2),
                PieceMatmul::Inner,
            ))
            .with(AdapterPiece {
                name: "ranknum",
                size: SizeForm::constant(1),
                role: PieceRole::Frozen,
                matmul: PieceMatmul::No,
            })
            .with(AdapterPiece {
                name: "proj",
                size: SizeForm::OUT,
                role: PieceRole::Buffer { dtype: DType::F32 },
                matmul: PieceMatmul::No,
            });
        let model = TransformerSpec::minigpt().build().unwrap();
        let units = model.group_adapter_units(&TargetSpec::AllLinear).unwrap();
        let rank = 4;
        let mut by_group = TrainingPlan::default();
        assert!(by_group.try_push_group_adapters(units, rank, &GENERAL));
        let mut by_module = TrainingPlan::default();
        for (module, m) in model.modules.iter().enumerate() {
            if TargetSpec::AllLinear.selects(m) {
                let site = AdapterSite {
                    module,
                    rank,
                    layout: &GENERAL,
                };
                by_module.push_adapter(&model, site).unwrap();
            }
        }
        for plan in [&by_group, &by_module] {
            assert_eq!(*plan.totals(), plan.recount(&model));
            // r x 2,304 (w_a) + r x 2 x (2,304 + 2,304) (w_hada).
            assert_eq!(plan.trainable_params().unwrap(), 4 * 2304 + 4 * 2 * 4608);
            assert_eq!(plan.frozen_params().unwrap(), 24);
            assert_eq!(plan.totals().trainable_tensors, 2 * 24);
            // The buffer is 4 bytes per output feature and in no parameter count.
            assert_eq!(plan.totals().fixed_storage_bytes, 4 * 2304);
            assert_eq!(plan.all_params().unwrap(), 4 * 2304 + 4 * 2 * 4608 + 24);
            // x A: r per token and instance.
            assert_eq!(plan.totals().compute_terms[0], 4 * 24);
        }
        assert_eq!(by_group.totals(), by_module.totals());

        // A tensor on the module input with an `out` term: the group sums cannot say what the
        // first block holds, so the group path declines and adds nothing.
        const OUT_ON_INPUT: AdapterLayout = AdapterLayout::new("odd", SizeForm::ZERO).with(
            AdapterPiece::trainable("w", SizeForm::OUT, PieceMatmul::Input),
        );
        let mut plan = TrainingPlan::default();
        assert!(!plan.try_push_group_adapters(units, rank, &OUT_ON_INPUT));
        assert_eq!(*plan.totals(), PlanTotals::default());
        let q_proj = AdapterSite {
            module: 0,
            rank,
            layout: &OUT_ON_INPUT,
        };
        plan.push_adapter(&model, q_proj).unwrap();
        assert_eq!(*plan.totals(), plan.recount(&model));
        // q_proj reads the attention input: its first-block instance (64 elements) is counted.
        assert_eq!(plan.totals().trainable_matmul, [4 * 64, 64]);
    }

    #[test]
    fn interned_layouts_are_shared() {
        let built = |k| {
            AdapterLayout::new("runtime", SizeForm::ZERO).with(AdapterPiece::trainable(
                "w",
                SizeForm::RANK_IN.times(k),
                PieceMatmul::No,
            ))
        };
        let (a, b, c) = (
            built(3).interned(),
            built(3).interned(),
            built(5).interned(),
        );
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, c));
        assert_eq!(c.pieces()[0].size.rank_in, 5);
    }

    #[test]
    fn shift_division_rounds_up_like_div_ceil() {
        for d in [1u64, 2, 3, 64, 100, 256, 1 << 20] {
            for n in [
                0u64,
                1,
                63,
                64,
                65,
                4095,
                4096,
                4097,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(div_ceil(n, d), n.div_ceil(d), "{n} / {d}");
            }
        }
    }

    #[test]
    fn nf4_bytes_match_bitsandbytes_for_64x64() {
        // shared/fixtures/nf4_bytes.json: 64x64, blocksize 64.
        assert_eq!(Nf4Layout::bitsandbytes(false).tensor_bytes(4096), 2368);
        assert_eq!(Nf4Layout::bitsandbytes(true).tensor_bytes(4096), 3208);
    }
}
