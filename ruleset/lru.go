package ruleset

// lruLinks are an entry's place in an lru order: the indexes of the entries
// used just before and just after it (-1: none).
type lruLinks struct{ prev, next int32 }

// lru is a least-recently-used order over the entries of a slice, linked
// through the entries' own lruLinks (head = least recently used, -1 when
// empty). hashlimit's buckets and recent's addresses use it to find their
// idlest entry.
type lru struct{ head, tail int32 }

// lruEntry is an entry type of an lru order.
type lruEntry[E any] interface {
	*E
	links() *lruLinks
}

// lruUnlink takes entry i of ents out of l.
func lruUnlink[E any, P lruEntry[E]](l *lru, ents []E, i int32) {
	e := P(&ents[i]).links()
	if e.prev >= 0 {
		P(&ents[e.prev]).links().next = e.next
	} else {
		l.head = e.next
	}
	if e.next >= 0 {
		P(&ents[e.next]).links().prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

// lruPushTail makes entry i of ents (not in l) the most recently used.
func lruPushTail[E any, P lruEntry[E]](l *lru, ents []E, i int32) {
	e := P(&ents[i]).links()
	e.prev, e.next = l.tail, -1
	if l.tail >= 0 {
		P(&ents[l.tail]).links().next = i
	} else {
		l.head = i
	}
	l.tail = i
}
