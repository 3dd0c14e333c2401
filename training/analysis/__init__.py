"""What the codes reveal: style maps and label probes on mean sparse codes, beside real baselines.

    sidl style groove --by drummer -p drums-gmd -o out/
    sidl probe asap --label composer -p piano-pop909 --json
    sidl report --quick                    # docs/results.md and docs/figures/

Analysis only (numpy, scikit-learn, matplotlib, mir_eval; music21 optional): the ``train`` extra.
"""
