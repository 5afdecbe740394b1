"""Knowledge distillation: a small ViT learns the digits from a larger ViT's soft answers.

Three models, trained on the same batches of vit_digits.py's digits for --steps each:

  teacher    the ViT of vit_digits.py (d_model 64, 3 layers)
  student    a ViT with a fraction of the parameters, trained on the labels alone
  distilled  the same student, same start, trained on
             alpha * distillation_loss(student, teacher, T) + (1 - alpha) * cross_entropy

``distillation_loss`` is T² KL(softmax(teacher / T) || softmax(student / T)) (Hinton et
al., 2015): at a temperature T > 1 the teacher's probabilities for the wrong classes,
which say that this 7 looks a bit like a 1, are large enough to learn from. The T²
keeps the gradient's size independent of T.

What to watch: the final table of held-out accuracies (the 360 held-out images of
vit_digits.py) and parameter counts. Measured: teacher 98.9%, student 85.0%, distilled
student 86.9% (one seed; the gap is 7 of 360 images).

    pip install -e ".[vision]"        # scikit-learn, for its bundled digits
    python demos/distill_digits.py    # 3.6 minutes on a 2-core CPU
"""
import common  # first: it limits BLAS threads before NumPy loads
import vit_digits

import minitransformer as mt
from minitransformer import no_grad
from minitransformer.functional import cross_entropy, distillation_loss


def make_parser():
    parser = vit_digits.make_parser(__file__, __doc__)
    flag = parser.add_argument
    flag("--student-d-model", type=int, default=32, help="default %(default)s")
    flag("--student-layers", type=int, default=1, help="default %(default)s")
    flag("--student-heads", type=int, default=2, help="default %(default)s")
    flag("--temperature", type=float, default=4.0, help="T (default %(default)s)")
    flag("--alpha", type=float, default=0.9,
         help="weight of the distillation loss; 1 - alpha goes to the labels "
              "(default %(default)s)")
    parser.set_defaults(plot="")  # --plot PATH draws the teacher's [CLS] attention
    return parser


def distillation_objective(teacher, args):
    """Hinton et al.'s loss: soft targets from ``teacher`` (no graph), plus the labels."""
    def loss(student, batch):
        images, labels = batch
        with no_grad():
            teacher_logits = teacher(images)
        logits = student(images)
        return (args.alpha * distillation_loss(logits, teacher_logits, args.temperature)
                + (1 - args.alpha) * cross_entropy(logits, labels))
    return loss


def main(argv=None):
    args = common.start(make_parser(), argv)
    data = vit_digits.load_digits()
    print("== teacher")
    teacher = vit_digits.build_model(args)
    results = {"teacher": (vit_digits.train_vit(teacher, args, data), teacher)}
    teacher.eval()
    if args.plot:
        vit_digits.plot_cls_attention(teacher, data[2], data[3], args.plot)
    for name, loss in [("student", vit_digits.classifier_loss),
                       ("distilled", distillation_objective(teacher, args))]:
        print(f"== {name}")
        mt.manual_seed(args.seed)  # both students start from the same weights
        student = vit_digits.build_model(args, args.student_d_model, args.student_layers,
                                         args.student_heads)
        results[name] = (vit_digits.train_vit(student, args, data, loss), student)
    print(f"held-out accuracy on {len(data[3])} images:")
    for name, (accuracy, model) in results.items():
        print(f"  {name:<10} {accuracy:7.2%}  {model.num_parameters():>8,} parameters")
    return common.finish(args, **{name: round(accuracy, 4)
                                  for name, (accuracy, _) in results.items()})


if __name__ == "__main__":
    main()
