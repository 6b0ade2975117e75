"""Reading documents: walking folders, loaders, chunkers and the manifest."""
