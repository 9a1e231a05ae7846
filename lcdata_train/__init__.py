"""lcdata_train: continual pretraining on lcdata shards and long-context evaluation (torch; `pip install lcdata[train]`).

Not implemented yet: see the open issues "lcdata_train" and "Needle-in-a-haystack".
"""
