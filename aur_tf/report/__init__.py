"""Results of finished runs side by side: `results` builds the table and the figure,
`python -m aur_tf.report` is the command."""
