"""Knowledge QA (retrieval-augmented generation) over a document folder.

* :mod:`~modelfab.llm.rag.chunking`: read ``.md``/``.txt``/``.html`` documents, split them into overlapping chunks.
* :mod:`~modelfab.llm.rag.index`: embed chunks with a registered text encoder, register the index (faiss).
* :mod:`~modelfab.llm.rag.answer`: answer a question with a chat model from retrieved, numbered passages.
* :mod:`~modelfab.llm.rag.scoring`: the documented answer and retrieval scoring rule.
* :mod:`~modelfab.llm.rag.qa_eval`: recall@k and answer accuracy on a hand-written QA file.
"""
