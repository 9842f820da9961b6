package quiclb

// Set holds the codecs of the configurations in use at one time, at most
// one per config rotation codepoint, so that CIDs of an old and a new
// configuration both decode during a rotation (draft §3.1). It is
// immutable after NewSet and safe for concurrent use; the zero Set decodes
// nothing (every routable CID is ErrRotation).
type Set struct {
	codecs [NumRotations]*Codec
}

// NewSet returns the Set of codecs, which must have distinct rotation
// codepoints (ErrDuplicateRotation otherwise). Nil codecs are skipped.
func NewSet(codecs ...*Codec) (*Set, error) {
	s := new(Set)
	for _, c := range codecs {
		if c == nil {
			continue
		}
		if s.codecs[c.Rotation()] != nil {
			return nil, ErrDuplicateRotation
		}
		s.codecs[c.Rotation()] = c
	}
	return s, nil
}

// Codec returns the codec of rotation codepoint r, or nil.
func (s *Set) Codec(r uint8) *Codec {
	if int(r) >= len(s.codecs) {
		return nil
	}
	return s.codecs[r]
}

// Lookup returns the codec for cid's rotation codepoint: ErrShortCID for an
// empty cid, ErrUnroutable for 0b111 and ErrRotation when the Set has no
// codec for it.
func (s *Set) Lookup(cid []byte) (*Codec, error) {
	if len(cid) == 0 {
		return nil, ErrShortCID
	}
	r := cid[0] >> 5
	if r == Unroutable {
		return nil, ErrUnroutable
	}
	c := s.codecs[r]
	if c == nil {
		return nil, ErrRotation
	}
	return c, nil
}

// DecodeServerID decodes cid with the codec of its rotation codepoint (see
// Codec.Decode for cid's extent and the errors). Server IDs are allocated
// per configuration, so the caller should key its server map by
// Rotation(cid) as well. It never allocates.
func (s *Set) DecodeServerID(cid []byte) (ServerID, error) {
	c, err := s.Lookup(cid)
	if err != nil {
		return ServerID{}, err
	}
	return c.DecodeServerID(cid)
}
